package functions

import (
	"context"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
)

type upsertArgs struct {
	Table  string           `json:"table"`
	Rows   []map[string]any `json:"rows,omitempty"`
	Source *sourceRef       `json:"source,omitempty"`
}

// upsertSpec is upsert: insert rows, or update the row with the same
// primary key.
var upsertSpec = spec[upsertArgs]{
	Name:        "upsert",
	Summary:     "insert rows (inline, or of a Postgres source) into a table, or update the existing row with the same primary key",
	Description: "Inserts each row into main.<table>, or, when a row with the same primary key exists, updates the columns the row gives (columns it leaves out keep their values). The table must have a primary key (create_table primary_key) and every row must give all its key columns. Either rows: inline row objects, applied in order (of two rows with the same key, the later wins). Or source: the rows of a Postgres source configured on the db-manager (a query or a table, as append's source); its columns must be columns of the table (by name) and include the key, each value is cast to its column's type, and a key the source gives twice fails the request (a source's rows have no order to choose the later by).",
	Schema: `"required": ["table"],
  "oneOf": [{"required": ["rows"]}, {"required": ["source"]}],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "rows": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/row"}},
    "source": {"$ref": "#/$defs/source"}
  }`,
	Examples: []string{
		`{"table":"t","rows":[{"id":1,"v":"b"},{"id":3,"v":"c"}]}`,
		`{"table":"customers","source":{"name":"crm","query":"SELECT id, name FROM customers WHERE updated >= current_date - 1"}}`,
	},
	Check: func(a *upsertArgs) error {
		if err := checkTable(a.Table); err != nil {
			return err
		}
		switch {
		case a.Rows != nil && a.Source != nil:
			return invalid("give rows or source, not both")
		case a.Source != nil:
			return a.Source.check()
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
	if a.Source != nil {
		return upsertSource(ctx, env, a.Source, t, key, conflict)
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
	n, err := insertRows(ctx, env.Conn, t, rows, keyIdx, conflict)
	if err != nil {
		return Result{}, err
	}
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}

// upsertSource upserts the rows of source s into table t (primary key
// key) with one INSERT … SELECT from the source's Arrow view and
// conflict's ON CONFLICT clause for the source's columns.
func upsertSource(ctx context.Context, env Env, s *sourceRef, t table, key []string, conflict func(cols []string) string) (Result, error) {
	dsn, err := sourceDSN(env, s)
	if err != nil {
		return Result{}, err
	}
	r, err := openSource(ctx, s, dsn)
	if err != nil {
		return Result{}, err
	}
	defer r.close(ctx)
	names := make([]string, len(r.cols))
	for i, c := range r.cols {
		names[i] = c.name
	}
	idx, err := t.resolveIdx(r.what+" column", names)
	if err != nil {
		return Result{}, err
	}
	cols := make([]string, len(idx)) // as the table spells them
	for i, j := range idx {
		cols[i] = t.Columns[j].Name
	}
	// DuckDB's ON CONFLICT keeps one of two rows with the same key in a
	// statement; the source's rows have no order, so that would be any
	// one: a key given twice (after the cast to the key's types) fails the
	// statement instead, as in Postgres. The source is a MATERIALIZED CTE:
	// DuckDB 1.5 plans count(*) OVER (PARTITION BY …) as an aggregate
	// hash-joined back to its input (EXPLAIN shows two scans), and the
	// Arrow view's stream can be read once.
	keys := make([]string, len(key))
	for i, k := range key {
		j := slices.Index(cols, k)
		if j < 0 {
			return Result{}, invalid("%s has no column for primary-key column %q of table %s: the source must give the whole key (%s)", r.what, k, t.Name, identList(key))
		}
		keys[i] = "CAST(" + duck.Ident(names[j]) + " AS " + t.Columns[idx[j]].Type + ")"
	}
	once := " QUALIFY CASE WHEN count(*) OVER (PARTITION BY " + strings.Join(keys, ", ") + ") > 1 THEN error(concat_ws(', ', " + strings.Join(keys, ", ") +
		") || ': " + r.what + " gives this key of table " + t.Name + " more than once; upsert takes each key once') ELSE true END"
	n, err := r.insert(ctx, env, "INSERT INTO "+qualified(t.Name)+" ("+identList(cols)+") WITH s AS MATERIALIZED (SELECT * FROM "+sourceTemp+") SELECT "+identList(names)+" FROM s"+once+conflict(cols))
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
