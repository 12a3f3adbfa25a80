package functions

import (
	"context"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

type createTableArgs struct {
	Table       string      `json:"table"`
	Columns     []columnDef `json:"columns"`
	PrimaryKey  []string    `json:"primary_key,omitempty"`
	IfNotExists bool        `json:"if_not_exists,omitempty"`
}

type columnDef struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	NotNull bool   `json:"not_null,omitempty"`
}

// createTableSpec is create_table: CREATE TABLE main.<table> (…).
var createTableSpec = spec[createTableArgs]{
	Name:        "create_table",
	Summary:     "create a table in schema main from column names and DuckDB types, with an optional primary key",
	Description: "Creates table main.<table>. Column types are DuckDB types (BIGINT, VARCHAR, DOUBLE, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, DECIMAL(18,2), JSON, INTEGER[], STRUCT(a INTEGER, b VARCHAR), MAP(VARCHAR, BIGINT), …) written with letters, digits, '_', spaces, ',', brackets only. primary_key names columns of the table; upsert uses it. An existing table is an error unless if_not_exists is true, which leaves it as it is.",
	Schema: `"required": ["table", "columns"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "columns": {
      "type": "array", "minItems": 1, "maxItems": 4096,
      "items": {
        "type": "object", "additionalProperties": false, "required": ["name", "type"],
        "properties": {
          "name": {"$ref": "#/$defs/column"},
          "type": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[A-Za-z0-9_ (),\\[\\]]+$"},
          "not_null": {"type": "boolean", "description": "NOT NULL constraint (primary-key columns are NOT NULL anyway)"}
        }
      }
    },
    "primary_key": {"type": "array", "items": {"$ref": "#/$defs/column"}, "uniqueItems": true},
    "if_not_exists": {"type": "boolean", "description": "leave an existing table as it is instead of failing (default false)"}
  }`,
	Examples: []string{
		`{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}`,
		`{"table":"sales","columns":[{"name":"day","type":"DATE","not_null":true},{"name":"store","type":"VARCHAR"},{"name":"amount","type":"DECIMAL(18,2)"},{"name":"tags","type":"VARCHAR[]"}],"if_not_exists":true}`,
	},
	Check: checkCreateTable,
	Apply: applyCreateTable,
}

// checkCreateTable checks the table, the column names and types and the
// primary key, which it spells as the columns do.
func checkCreateTable(a *createTableArgs) error {
	if err := checkTable(a.Table); err != nil {
		return err
	}
	if len(a.Columns) == 0 {
		return invalid("columns is empty: give at least one {\"name\",\"type\"}")
	}
	if len(a.Columns) > MaxColumns {
		return invalid("%d columns: at most %d are allowed", len(a.Columns), MaxColumns)
	}
	byName := make(map[string]string, len(a.Columns))
	for _, c := range a.Columns {
		if err := checkColumn("column name", c.Name); err != nil {
			return err
		}
		folded := strings.ToLower(c.Name)
		if prev, dup := byName[folded]; dup {
			return invalid("columns %q and %q are the same name to DuckDB (names are case-insensitive)", prev, c.Name)
		}
		byName[folded] = c.Name
		if err := checkType(c.Name, c.Type); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, k := range a.PrimaryKey {
		if err := checkColumn("primary_key column", k); err != nil {
			return err
		}
		c, ok := byName[strings.ToLower(k)]
		if !ok {
			return invalid("primary_key column %s is not one of the columns", model.Quote(k))
		}
		if seen[c] {
			return invalid("primary_key names column %q twice", c)
		}
		seen[c] = true
		a.PrimaryKey[i] = c
	}
	return nil
}

// ddl is the CREATE TABLE statement of a.
func (a *createTableArgs) ddl() string {
	var b strings.Builder
	b.WriteString("CREATE TABLE ")
	if a.IfNotExists {
		b.WriteString("IF NOT EXISTS ")
	}
	b.WriteString(qualified(a.Table) + " (")
	for i, c := range a.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(duck.Ident(c.Name) + " " + c.Type)
		if c.NotNull {
			b.WriteString(" NOT NULL")
		}
	}
	if len(a.PrimaryKey) > 0 {
		b.WriteString(", PRIMARY KEY (")
		for i, k := range a.PrimaryKey {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(duck.Ident(k))
		}
		b.WriteString(")")
	}
	b.WriteString(")")
	return b.String()
}

// applyCreateTable creates the table. With if_not_exists and an existing
// table it changes nothing and returns an empty Result.
func applyCreateTable(ctx context.Context, env Env, a *createTableArgs) (Result, error) {
	env.Tables.Forget()
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	if exists {
		if a.IfNotExists {
			return Result{}, nil
		}
		return Result{}, invalid("table %q exists already with columns %s: drop it first, or pass \"if_not_exists\": true", t.Name, t.columnList())
	}
	if _, err := env.Conn.ExecContext(ctx, a.ddl()); err != nil {
		return Result{}, dbError("create table "+a.Table, err)
	}
	return Result{Tables: []string{a.Table}, Replaced: true}, nil
}
