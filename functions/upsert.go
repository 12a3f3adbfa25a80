package functions

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
)

// upsert is upsert: insert rows, or update the row with the same primary
// key.
type upsert struct{}

var _ Function = upsert{}

type upsertArgs struct {
	Table string           `json:"table"`
	Rows  []map[string]any `json:"rows"`
}

func (upsert) Name() string { return "upsert" }

func (upsert) Summary() string {
	return "insert rows into a table, or update the existing row with the same primary key"
}

var upsertSchema = makeSchema("upsert",
	"Inserts each row into main.<table>, or, when a row with the same primary key exists, updates the columns the row gives (columns it leaves out keep their values). The table must have a primary key (create_table primary_key) and every row must give all its columns. Rows apply in order: of two rows with the same key, the later wins.",
	`"required": ["table", "rows"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "rows": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/row"}}
  }`,
	`{"table":"t","rows":[{"id":1,"v":"b"},{"id":3,"v":"c"}]}`,
)

func (upsert) Schema() json.RawMessage { return upsertSchema }

func (f upsert) Validate(args json.RawMessage) error {
	_, err := f.parse(args)
	return err
}

func (f upsert) parseAny(args json.RawMessage) (any, error) { return f.parse(args) }

func (f upsert) parse(args json.RawMessage) (*upsertArgs, error) {
	fn := f.Name()
	var a upsertArgs
	if err := decodeArgs(fn, args, &a); err != nil {
		return nil, err
	}
	if err := checkTable(fn, a.Table); err != nil {
		return nil, err
	}
	if err := checkRows(fn, a.Rows); err != nil {
		return nil, err
	}
	return &a, nil
}

// Apply upserts the rows with INSERT … ON CONFLICT (key) DO UPDATE.
func (f upsert) Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error) {
	fn := f.Name()
	a, err := f.parse(args)
	if err != nil {
		return Result{}, err
	}
	t, err := mustTable(ctx, env, fn, a.Table)
	if err != nil {
		return Result{}, err
	}
	key, err := primaryKey(ctx, env.Conn, t.Name)
	if err != nil {
		return Result{}, dbError(fn, "read the primary key of "+t.Name, err)
	}
	if len(key) == 0 {
		return Result{}, invalid(fn, "table %s has no primary key: upsert needs one (create_table primary_key); use append to add rows", t.Name)
	}
	keyIdx, err := t.resolveIdx(fn, "primary-key column", key)
	if err != nil {
		return Result{}, err
	}
	rows, err := bindRows(fn, t, a.Rows)
	if err != nil {
		return Result{}, err
	}
	for i, r := range rows {
		for _, k := range keyIdx {
			if !r.has[k] {
				return Result{}, invalid(fn, "row %d has no value for primary-key column %q: every row must give the whole key (%s)", i, t.Columns[k].Name, identList(key))
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
	n, err := insertRows(ctx, env.Conn, fn, t, rows, keyIdx, conflict)
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
