package functions

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/teatree/teatree/model"
)

// Limits of one INSERT statement built from inline rows. Rows are sent in
// chunks of at most maxRowsPerInsert rows and maxParamsPerInsert bound
// values.
const (
	maxRowsPerInsert   = 500
	maxParamsPerInsert = 1000
)

// checkRows checks inline rows without a model: at least one row, every
// row a non-empty object whose keys are valid column names.
func checkRows(rows []map[string]any) error {
	if len(rows) == 0 {
		return invalid("rows is empty: give at least one row object, e.g. [{\"id\":1}]")
	}
	for i, r := range rows {
		if len(r) == 0 {
			return invalid("row %d is an empty object: give at least one column", i)
		}
		for k := range r {
			if err := checkColumn(fmt.Sprintf("row %d: column name", i), k); err != nil {
				return err
			}
		}
	}
	return nil
}

// boundRow is one inline row matched to a table: by table column index,
// whether the row gives the column and the value to bind for it.
type boundRow struct {
	has  []bool
	vals []any
}

// bindRows matches rows to t's columns by name (see table.resolve) and
// converts their values with table.bindValue.
func bindRows(t table, rows []map[string]any) ([]boundRow, error) {
	out := make([]boundRow, len(rows))
	for i, r := range rows {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys) // a stable order for error messages
		pos, err := t.resolveIdx(fmt.Sprintf("row %d: key", i), keys)
		if err != nil {
			return nil, err
		}
		b := boundRow{has: make([]bool, len(t.Columns)), vals: make([]any, len(t.Columns))}
		for j, p := range pos {
			v, err := t.bindValue(p, r[keys[j]])
			if err != nil {
				return nil, invalid("row %d: column %s (%s): %v", i, model.Quote(t.Columns[p].Name), t.Columns[p].Type, err)
			}
			b.has[p], b.vals[p] = true, v
		}
		out[i] = b
	}
	return out, nil
}

// insertRows inserts rows into t with multi-row INSERT statements of bound
// values, in order; a statement holds at most maxRowsPerInsert rows and
// maxParamsPerInsert values. It returns the rows DuckDB reports as
// inserted or updated.
//
// Append (key nil): a statement lists the union of its rows' columns, and
// a row that leaves a column out gives DEFAULT for it. Upsert (key holds
// the primary-key column indexes): consecutive rows with the same columns
// share a statement, so that the ON CONFLICT clause suffix(cols) updates
// only the columns a row gives; a row whose key repeats one of the current
// statement starts a new one, so that the later row wins (DuckDB applies
// only the first of two conflicting rows in one statement).
func insertRows(ctx context.Context, conn *sql.Conn, t table, rows []boundRow, key []int, suffix func(cols []string) string) (int64, error) {
	var total int64
	flush := func(chunk []boundRow, shape []bool) error {
		if len(chunk) == 0 {
			return nil
		}
		var cols []string
		for i, ok := range shape {
			if ok {
				cols = append(cols, t.Columns[i].Name)
			}
		}
		var b strings.Builder
		b.WriteString("INSERT INTO " + qualified(t.Name) + " (" + identList(cols) + ") VALUES ")
		var args []any
		for i, r := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			sep := ""
			for j, ok := range shape {
				if !ok {
					continue
				}
				b.WriteString(sep)
				sep = ", "
				if r.has[j] {
					b.WriteString(placeholder(t.Columns[j].Type))
					args = append(args, r.vals[j])
				} else {
					b.WriteString("DEFAULT")
				}
			}
			b.WriteString(")")
		}
		if suffix != nil {
			b.WriteString(suffix(cols))
		}
		res, err := conn.ExecContext(ctx, b.String(), args...)
		if err != nil {
			if conversionError(err) {
				if bad := badCast(ctx, t, rows); bad != nil {
					return bad
				}
			}
			return dbError(fmt.Sprintf("insert %d rows into %s", len(chunk), t.Name), err)
		}
		if n, err := res.RowsAffected(); err == nil {
			total += n
		}
		return nil
	}
	var (
		chunk []boundRow
		shape []bool // the current statement's columns
		width int    // how many columns shape has
		keys  = map[string]bool{}
	)
	for _, r := range rows {
		k := ""
		if key != nil {
			k = keyOf(r, key)
		}
		if len(chunk) > 0 {
			w := width
			if key == nil {
				w = unionWidth(shape, r.has)
			}
			full := len(chunk) >= maxRowsPerInsert || w*(len(chunk)+1) > maxParamsPerInsert
			if full || key != nil && (!slices.Equal(shape, r.has) || keys[k]) {
				if err := flush(chunk, shape); err != nil {
					return total, err
				}
				chunk = chunk[:0]
				clear(keys)
			}
		}
		if len(chunk) == 0 {
			shape = slices.Clone(r.has)
		} else {
			for i, ok := range r.has {
				shape[i] = shape[i] || ok
			}
		}
		width = unionWidth(shape, nil)
		chunk = append(chunk, r)
		keys[k] = true
	}
	if err := flush(chunk, shape); err != nil {
		return total, err
	}
	return total, nil
}

// unionWidth counts the columns in a or b.
func unionWidth(a, b []bool) int {
	n := 0
	for i, ok := range a {
		if ok || b != nil && b[i] {
			n++
		}
	}
	return n
}

// keyOf renders the key values of r as text to spot repeated keys. 1 and
// "1" render alike: a false match only splits a statement, which is
// always safe.
func keyOf(r boundRow, key []int) string {
	var b strings.Builder
	for _, k := range key {
		fmt.Fprintf(&b, "%v", r.vals[k])
		b.WriteByte(0)
	}
	return b.String()
}

// RowBuffer gathers the inline rows of a batch's appends so that they are
// inserted with one multi-row INSERT per table and maxRowsPerInsert rows
// instead of one statement per request: binding and executing a
// statement costs about 30 times as much as a row in a multi-row one
// (docs/performance.md, scenario 1). With Env.Rows set, an append of
// inline rows checks and binds its rows as always (its own errors stay
// its own) and adds them to the buffer; the caller flushes it before any
// call that does not defer (DefersRows), and before it reads or records
// anything. A table's rows keep their order; tables are independent.
type RowBuffer struct {
	tables []*pendingRows
}

type pendingRows struct {
	t    table
	rows []boundRow
}

// DefersRows reports whether c, applied with Env.Rows set, only adds
// rows to the buffer: an append of inline rows.
func DefersRows(c Call) bool {
	a, ok := c.(call[appendArgs])
	return ok && a.args.Payload == nil && a.args.Source == nil
}

func (b *RowBuffer) add(t table, rows []boundRow) {
	for _, p := range b.tables {
		if p.t.Name == t.Name {
			p.rows = append(p.rows, rows...)
			return
		}
	}
	b.tables = append(b.tables, &pendingRows{t: t, rows: rows})
}

// Flush inserts the buffered rows and empties the buffer. An error may
// belong to any of the requests that added rows (a constraint): the
// caller rolls back and applies them again one by one without a buffer.
func (b *RowBuffer) Flush(ctx context.Context, conn *sql.Conn) error {
	defer func() { b.tables = b.tables[:0] }()
	for _, p := range b.tables {
		if _, err := insertRows(ctx, conn, p.t, p.rows, nil, nil); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	return nil
}
