package profile

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// Build profiles the rows of main.table matching where ("" for all, e.g.
// "rowid >= 10 AND rowid < 20") as conn sees them, in conn's current
// transaction if it has one. cols are the table's columns (describe).
// DuckDB does the counting: one aggregate query for the counts, minima and
// maxima of every column, then per few sketched columns one query
// grouping each column's values, whose results (per column at most
// Candidates+1 values, 2^Precision registers and Width·Depth counters)
// fill the sketches. Values tied in count at the end of the candidates
// are taken in DuckDB's order of the column's type.
//
// Every statement is prepared first: an error in DuckDB ends the current
// transaction, except at prepare time (binding, types), so a column Build
// cannot handle fails there and leaves the caller's transaction usable.
// An error while a statement runs (out of memory, cancelled) does end it.
func Build(ctx context.Context, conn *sql.Conn, table string, cols []snapshot.Column, where string) (*Profile, error) {
	p, _, err := BuildWith(ctx, conn, table, cols, where, nil)
	return p, err
}

// BuildWith is Build computing, in the same scan as its aggregate query,
// the aggregate SQL expressions aggregates over the same rows (e.g.
// "sum(hash(a, b))"), so that a caller needing more of those rows than
// their profile does not scan them again. It returns their values cast to
// VARCHAR, in order (NULL: not Valid). An aggregate DuckDB cannot bind
// fails Build at prepare time, as a column it cannot handle does.
func BuildWith(ctx context.Context, conn *sql.Conn, table string, cols []snapshot.Column, where string, aggregates []string) (*Profile, []sql.NullString, error) {
	from := " FROM main." + duck.Ident(table)
	cond := "true"
	if where != "" {
		cond = "(" + where + ")"
	}
	p := &Profile{}
	// inner aggregates, outer converts: TRY may not hold an aggregate
	inner, sel := []string{"count(*) AS n"}, []string{"n"}
	for i, c := range cols {
		col := newColumn(c.Name, c.Type)
		p.Columns = append(p.Columns, col)
		id := duck.Ident(c.Name)
		mn, mx := fmt.Sprintf("mn%d", i), fmt.Sprintf("mx%d", i)
		inner = append(inner, fmt.Sprintf("count(%s) AS c%d", id, i))
		sel = append(sel, fmt.Sprintf("c%d", i))
		k := kindOf(c.Type)
		if k == kindNested {
			continue
		}
		inner = append(inner, "min("+id+") AS "+mn, "max("+id+") AS "+mx)
		sel = append(sel, mn+"::VARCHAR", mx+"::VARCHAR")
		if k == kindTime {
			ts := "::TIMESTAMP"
			if t := strings.ToUpper(c.Type); strings.Contains(t, "TIME ZONE") || t == "TIMESTAMPTZ" {
				ts = ""
			}
			sel = append(sel, "try(epoch_us("+mn+ts+"))", "try(epoch_us("+mx+ts+"))")
		}
	}
	extra := make([]sql.NullString, len(aggregates))
	for i, e := range aggregates {
		inner = append(inner, fmt.Sprintf("%s AS x%d", e, i))
		sel = append(sel, fmt.Sprintf("x%d::VARCHAR", i))
	}
	// One row: count(*), then per column count, and unless nested min and
	// max (and for temporal types their microseconds), then the extra
	// aggregates.
	dest := []any{&p.Rows}
	type agg struct {
		count            int64
		min, max         sql.NullString
		minUs, maxUs     sql.NullInt64
		hasBounds, micro bool
	}
	aggs := make([]agg, len(cols))
	for i, c := range cols {
		a := &aggs[i]
		dest = append(dest, &a.count)
		switch kindOf(c.Type) {
		case kindNested:
		case kindTime:
			a.hasBounds, a.micro = true, true
			dest = append(dest, &a.min, &a.max, &a.minUs, &a.maxUs)
		default:
			a.hasBounds = true
			dest = append(dest, &a.min, &a.max)
		}
	}
	for i := range extra {
		dest = append(dest, &extra[i])
	}
	st, err := conn.PrepareContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM (SELECT "+strings.Join(inner, ", ")+from+" WHERE "+cond+")")
	if err != nil {
		return nil, nil, fmt.Errorf("profile: count the columns of %s: %w", table, err)
	}
	defer st.Close()
	if err := st.QueryRowContext(ctx).Scan(dest...); err != nil {
		return nil, nil, fmt.Errorf("profile: count the columns of %s: %w", table, err)
	}
	// a column's distinct values are at most the rows
	perQuery := int(max(1, min(sketchColumns, sketchValues/max(p.Rows, 1))))
	var batch []*Column
	for i, c := range p.Columns {
		a := aggs[i]
		c.Nulls = p.Rows - a.count
		if a.hasBounds && a.min.Valid {
			c.Min = &Bound{Text: a.min.String, Micros: a.minUs.Int64, HasMicros: a.minUs.Valid}
			c.Max = &Bound{Text: a.max.String, Micros: a.maxUs.Int64, HasMicros: a.maxUs.Valid}
		}
		if c.distinct != nil && a.count > 0 {
			batch = append(batch, c)
		}
		if len(batch) == perQuery || (i == len(p.Columns)-1 && len(batch) > 0) {
			if err := sketch(ctx, conn, from, cond, batch); err != nil {
				return nil, nil, fmt.Errorf("profile: sketch %s: %w", columnNames(table, batch), err)
			}
			batch = batch[:0]
		}
	}
	return p, extra, nil
}

// One sketch query groups up to sketchColumns columns, fewer when their
// rows could exceed sketchValues grouped values in all (2^22: four columns
// of a 2^20-row data file), since a query holds every column's grouped
// values until it ends. Each statement fewer saves DuckDB's planning and
// pipeline start-ups: per 1 M flights rows, one query for the 5 columns
// took 10-20 % less CPU than one per column, and as much on a 1,000-row
// file; on 8 columns of 2^20 unique strings, grouping 4 or 8 at a time
// cost the same CPU as one at a time at memory_limit 1GB, 25-50 % more at
// 256MB (spilling).
const (
	sketchColumns       = 16
	sketchValues  int64 = 1 << 22
)

func columnNames(table string, cols []*Column) string {
	if len(cols) == 1 {
		return "column " + cols[0].Name + " of " + table
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return "columns " + strings.Join(names, ", ") + " of " + table
}

// sketch fills the candidates and sketches of cols
// from one query over each column's non-null values grouped
// (materialized once per column). Its rows are (i, k, a, b, t, r) for
// column cols[i]: kind k 0 the Candidates+1 most frequent values (hash,
// count, text, rank r from 0; ties in count by the value's order in
// DuckDB, so that only those rows are cast to text), kind 1 per
// HyperLogLog register the least low bits of a hash (inserting that hash
// alone sets the register as inserting all would), kind 2 per count-min
// counter its count.
func sketch(ctx context.Context, conn *sql.Conn, from, cond string, cols []*Column) error {
	st, err := conn.PrepareContext(ctx, sketchQuery(from, cond, cols))
	if err != nil {
		return err
	}
	defer st.Close()
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return err
	}
	defer rows.Close()
	// candidates of cols[i] by rank (set: the row came)
	type candidate struct {
		v   Value
		set bool
	}
	top := make([][]candidate, len(cols))
	for rows.Next() {
		var i int
		var k uint8
		var a, b uint64
		var t sql.NullString
		var r sql.NullInt64
		if err := rows.Scan(&i, &k, &a, &b, &t, &r); err != nil {
			return err
		}
		if i < 0 || i >= len(cols) {
			return fmt.Errorf("column %d out of range", i)
		}
		c := cols[i]
		switch k {
		case 0:
			if r.Int64 < 0 || r.Int64 > Candidates {
				return fmt.Errorf("candidate %d out of range", r.Int64)
			}
			if top[i] == nil {
				top[i] = make([]candidate, Candidates+1)
			}
			top[i][r.Int64] = candidate{Value{Text: t.String, Hash: a, Low: int64(b), High: int64(b)}, true}
		case 1:
			c.distinct.InsertHash(a<<(64-Precision) | b)
		case 2:
			if a >= uint64(len(c.cms.cells)) {
				return fmt.Errorf("counter %d out of range", a)
			}
			c.cms.cells[a] = b
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, c := range cols {
		for _, x := range top[i] {
			if x.set {
				c.Top = append(c.Top, x.v)
			}
		}
		if len(c.Top) > Candidates {
			c.Others = c.Top[Candidates].High
			c.Top = c.Top[:Candidates]
		}
		sortTop(c.Top)
	}
	return nil
}

// sketchQuery is sketch's query: per column i a CTE gi of (h, n, v), the
// hash, count and value of each distinct non-null value, and the union of
// every column's three parts.
func sketchQuery(from, cond string, cols []*Column) string {
	// counter of row i, as cell computes it (unnest: a join with range(Depth) is 8× slower)
	cells := make([]string, Depth)
	for i := range cells {
		cells[i] = fmt.Sprintf("%d + ((h & 4294967295) + %d * (h >> 32)) %% %d", i*Width, i, Width)
	}
	unnest := "unnest([" + strings.Join(cells, ", ") + "])"
	low := fmt.Sprint(uint64(1)<<(64-Precision) - 1)
	ctes := make([]string, len(cols))
	parts := make([]string, len(cols))
	for i, c := range cols {
		id, g := duck.Ident(c.Name), fmt.Sprintf("g%d", i)
		ctes[i] = g + " AS MATERIALIZED (SELECT hash(v) AS h, n, v FROM (SELECT " + id + " AS v, count(*) AS n" + from + " WHERE " + cond + " AND " + id + " IS NOT NULL GROUP BY " + id + "))"
		parts[i] = fmt.Sprintf("(SELECT %d::INTEGER AS i, 0::UTINYINT AS k, h AS a, n::UBIGINT AS b, v::VARCHAR AS t, (row_number() OVER (ORDER BY n DESC, v) - 1)::INTEGER AS r FROM (SELECT h, n, v FROM %s ORDER BY n DESC, v LIMIT %d))", i, g, Candidates+1) +
			fmt.Sprintf(" UNION ALL SELECT %d, 1, h >> %d, min(h & %s::UBIGINT), NULL, NULL FROM %s GROUP BY 3", i, 64-Precision, low, g) +
			fmt.Sprintf(" UNION ALL SELECT %d, 2, c, sum(n)::UBIGINT, NULL, NULL FROM (SELECT %s AS c, n FROM %s) GROUP BY c", i, unnest, g)
	}
	return "WITH " + strings.Join(ctes, ", ") + " " + strings.Join(parts, " UNION ALL ")
}
