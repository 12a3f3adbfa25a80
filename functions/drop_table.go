package functions

import "context"

type dropTableArgs struct {
	Table    string `json:"table"`
	IfExists bool   `json:"if_exists,omitempty"`
}

// dropTableSpec is drop_table: DROP TABLE main.<table>.
var dropTableSpec = spec[dropTableArgs]{
	Name:        "drop_table",
	Summary:     "drop a table of schema main",
	Description: "Drops main.<table> (and, for a derived table, its definition: it is no longer kept current). A missing table is an error unless if_exists is true.",
	Schema: `"required": ["table"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "if_exists": {"type": "boolean", "description": "a missing table is not an error (default false)"}
  }`,
	Examples: []string{`{"table":"t"}`, `{"table":"scratch","if_exists":true}`},
	Check:    func(a *dropTableArgs) error { return checkTable(a.Table) },
	Apply:    applyDropTable,
}

// applyDropTable drops the table. With if_exists and no such table it
// changes nothing and returns an empty Result.
func applyDropTable(ctx context.Context, env Env, a *dropTableArgs) (Result, error) {
	env.Tables.Forget()
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	if !exists {
		if a.IfExists {
			return Result{}, nil
		}
		return Result{}, invalid("table %q does not exist in schema main (pass \"if_exists\": true to ignore that)", a.Table)
	}
	if _, err := env.Conn.ExecContext(ctx, "DROP TABLE "+qualified(t.Name)); err != nil {
		return Result{}, dbError("drop table "+t.Name, err)
	}
	if err := dropDerived(ctx, env.Conn, t.Name); err != nil {
		return Result{}, dbError("drop the definition of "+t.Name, err)
	}
	return Result{Tables: []string{t.Name}, Replaced: true}, nil
}
