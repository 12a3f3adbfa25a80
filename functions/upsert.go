package functions

import (
	"context"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
)

type upsertArgs struct {
	Table string           `json:"table"`
	Rows  []map[string]any `json:"rows"`
}

// upsertSpec is upsert: insert rows, or update the row with the same
// primary key.
var upsertSpec = spec[upsertArgs]{
	Name:        "upsert",
	Summary:     "insert rows into a table, or update the existing row with the same primary key",
	Description: "Inserts each row into main.<table>, or, when a row with the same primary key exists, updates the columns the row gives (columns it leaves out keep their values). The table must have a primary key (create_table primary_key) and every row must give all its columns. Rows apply in order: of two rows with the same key, the later wins.",
	Schema: `"required": ["table", "rows"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "rows": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/row"}}
  }`,
	Examples: []string{`{"table":"t","rows":[{"id":1,"v":"b"},{"id":3,"v":"c"}]}`},
	Check: func(a *upsertArgs) error {
		if err := checkTable(a.Table); err != nil {
			return err
		}
		return checkRows(a.Rows)
	},
	Apply: applyUpsert,
}

// applyUpsert upserts the rows with INSERT … ON CONFLICT (key) DO UPDATE.
func applyUpsert(ctx context.Context, env Env, a *upsertArgs) (Result, error) {
	t, err := mustTable(ctx, env, a.Table)
	if err != nil {
		return Result{}, err
	}
	key, err := primaryKey(ctx, env.Conn, t.Name)
	if err != nil {
		return Result{}, dbError("read the primary key of "+t.Name, err)
	}
	if len(key) == 0 {
		return Result{}, invalid("table %s has no primary key: upsert needs one (create_table primary_key); use append to add rows", t.Name)
	}
	keyIdx, err := t.resolveIdx("primary-key column", key)
	if err != nil {
		return Result{}, err
	}
	rows, err := bindRows(t, a.Rows)
	if err != nil {
		return Result{}, err
	}
	for i, r := range rows {
		for _, k := range keyIdx {
			if !r.has[k] {
				return Result{}, invalid("row %d has no value for primary-key column %q: every row must give the whole key (%s)", i, t.Columns[k].Name, identList(key))
			}
		}
	}
	conflict := func(cols []string) string {
		var set []string
		for _, c := range cols {
			if !slices.Contains(key, c) {
				set = append(set, duck.Ident(c)+" = excluded."+duck.Ident(c))
			}
		}
		if len(set) == 0 {
			return " ON CONFLICT (" + identList(key) + ") DO NOTHING"
		}
		return " ON CONFLICT (" + identList(key) + ") DO UPDATE SET " + strings.Join(set, ", ")
	}
	n, err := insertRows(ctx, env.Conn, t, rows, keyIdx, conflict)
	if err != nil {
		return Result{}, err
	}
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}

// identList quotes names with duck.Ident and joins them with ", ".
func identList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = duck.Ident(n)
	}
	return strings.Join(q, ", ")
}
