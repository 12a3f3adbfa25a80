package snapshot

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/teatree/teatree/duck"
)

// TableDiff is how one table changed between two snapshots.
type TableDiff struct {
	Table          string         `json:"table"`
	Change         string         `json:"change"` // added, removed, changed, unchanged
	RowsAdded      int64          `json:"rows_added"`
	RowsRemoved    int64          `json:"rows_removed"`
	ColumnsAdded   []Column       `json:"columns_added,omitempty"`
	ColumnsRemoved []Column       `json:"columns_removed,omitempty"`
	TypesChanged   []ColumnChange `json:"types_changed,omitempty"`
}

// ColumnChange is a column whose type changed.
type ColumnChange struct {
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

// SchemaChanges summarises the schema changes in one line ("" when none).
func (d TableDiff) SchemaChanges() string {
	var parts []string
	for _, c := range d.ColumnsAdded {
		parts = append(parts, "+"+c.Name+" "+c.Type)
	}
	for _, c := range d.ColumnsRemoved {
		parts = append(parts, "-"+c.Name+" "+c.Type)
	}
	for _, c := range d.TypesChanged {
		parts = append(parts, c.Name+" "+c.From+"→"+c.To)
	}
	return strings.Join(parts, ", ")
}

// Diff compares the user tables of snapshot files a and b (a the older).
// Rows are compared as multisets (EXCEPT ALL) over the columns both
// versions have with the same type, so a row changed in place counts as
// one removed and one added.
func Diff(ctx context.Context, a, b string) ([]TableDiff, error) {
	db, err := duck.Open(ctx, "", duck.Options{Threads: 2, AllowedDirs: []string{filepath.Dir(a), filepath.Dir(b)}})
	if err != nil {
		return nil, fmt.Errorf("snapshot: diff: %w", err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: diff: %w", err)
	}
	defer conn.Close()
	for alias, path := range map[string]string{"va": a, "vb": b} {
		if _, err := conn.ExecContext(ctx, "ATTACH "+duck.Literal(path)+" AS "+alias+" (READ_ONLY)"); err != nil {
			return nil, fmt.Errorf("snapshot: diff: attach %s: %w", path, err)
		}
	}
	ta, err := describe(ctx, conn, "va")
	if err != nil {
		return nil, err
	}
	tb, err := describe(ctx, conn, "vb")
	if err != nil {
		return nil, err
	}
	byName := func(ts []Table) map[string]Table {
		m := map[string]Table{}
		for _, t := range ts {
			m[t.Name] = t
		}
		return m
	}
	ma, mb := byName(ta), byName(tb)
	names := map[string]bool{}
	for n := range ma {
		names[n] = true
	}
	for n := range mb {
		names[n] = true
	}
	var out []TableDiff
	for n := range names {
		x, inA := ma[n]
		y, inB := mb[n]
		d := TableDiff{Table: n}
		switch {
		case !inA:
			d.Change, d.RowsAdded, d.ColumnsAdded = "added", y.Rows, y.Columns
		case !inB:
			d.Change, d.RowsRemoved, d.ColumnsRemoved = "removed", x.Rows, x.Columns
		default:
			typesA := map[string]string{}
			for _, c := range x.Columns {
				typesA[c.Name] = c.Type
			}
			typesB := map[string]string{}
			for _, c := range y.Columns {
				typesB[c.Name] = c.Type
			}
			var common []string
			for _, c := range x.Columns {
				t, ok := typesB[c.Name]
				switch {
				case !ok:
					d.ColumnsRemoved = append(d.ColumnsRemoved, c)
				case t != c.Type:
					d.TypesChanged = append(d.TypesChanged, ColumnChange{c.Name, c.Type, t})
				default:
					common = append(common, duck.Ident(c.Name))
				}
			}
			for _, c := range y.Columns {
				if _, ok := typesA[c.Name]; !ok {
					d.ColumnsAdded = append(d.ColumnsAdded, c)
				}
			}
			if len(common) > 0 {
				cols := strings.Join(common, ", ")
				ta, tb := "va.main."+duck.Ident(n), "vb.main."+duck.Ident(n)
				q := fmt.Sprintf(`SELECT (SELECT count(*) FROM (SELECT %[1]s FROM %[3]s EXCEPT ALL SELECT %[1]s FROM %[2]s)),
					(SELECT count(*) FROM (SELECT %[1]s FROM %[2]s EXCEPT ALL SELECT %[1]s FROM %[3]s))`, cols, ta, tb)
				if err := conn.QueryRowContext(ctx, q).Scan(&d.RowsAdded, &d.RowsRemoved); err != nil {
					return nil, fmt.Errorf("snapshot: diff %s: %w", n, err)
				}
			} else {
				d.RowsAdded, d.RowsRemoved = y.Rows, x.Rows
			}
			d.Change = "unchanged"
			if d.RowsAdded+d.RowsRemoved > 0 || d.SchemaChanges() != "" {
				d.Change = "changed"
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out, nil
}
