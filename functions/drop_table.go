package functions

import (
	"context"
	"encoding/json"
)

// dropTable is drop_table: DROP TABLE main.<table>.
type dropTable struct{}

var _ Function = dropTable{}

type dropTableArgs struct {
	Table    string `json:"table"`
	IfExists bool   `json:"if_exists,omitempty"`
}

func (dropTable) Name() string { return "drop_table" }

func (dropTable) Summary() string { return "drop a table of schema main" }

var dropTableSchema = makeSchema("drop_table",
	"Drops main.<table>. A missing table is an error unless if_exists is true.",
	`"required": ["table"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "if_exists": {"type": "boolean", "description": "a missing table is not an error (default false)"}
  }`,
	`{"table":"t"}`,
	`{"table":"scratch","if_exists":true}`,
)

func (dropTable) Schema() json.RawMessage { return dropTableSchema }

func (f dropTable) Validate(args json.RawMessage) error {
	_, err := f.parse(args)
	return err
}

func (f dropTable) parseAny(args json.RawMessage) (any, error) { return f.parse(args) }

func (f dropTable) parse(args json.RawMessage) (*dropTableArgs, error) {
	fn := f.Name()
	var a dropTableArgs
	if err := decodeArgs(fn, args, &a); err != nil {
		return nil, err
	}
	if err := checkTable(fn, a.Table); err != nil {
		return nil, err
	}
	return &a, nil
}

// Apply drops the table. With if_exists and no such table it changes
// nothing and returns an empty Result.
func (f dropTable) Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error) {
	env.Tables.forget()
	fn := f.Name()
	a, err := f.parse(args)
	if err != nil {
		return Result{}, err
	}
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError(fn, "look up table "+a.Table, err)
	}
	if !exists {
		if a.IfExists {
			return Result{}, nil
		}
		return Result{}, invalid(fn, "table %q does not exist in schema main (pass \"if_exists\": true to ignore that)", a.Table)
	}
	if _, err := env.Conn.ExecContext(ctx, "DROP TABLE "+qualified(t.Name)); err != nil {
		return Result{}, dbError(fn, "drop table "+t.Name, err)
	}
	return Result{Tables: []string{t.Name}, Replaced: true}, nil
}
