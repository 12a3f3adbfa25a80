package functions

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// createTable is create_table: CREATE TABLE main.<table> (…).
type createTable struct{}

var _ Function = createTable{}

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

func (createTable) Name() string { return "create_table" }

func (createTable) Summary() string {
	return "create a table in schema main from column names and DuckDB types, with an optional primary key"
}

var createTableSchema = makeSchema("create_table",
	"Creates table main.<table>. Column types are DuckDB types (BIGINT, VARCHAR, DOUBLE, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ, DECIMAL(18,2), JSON, INTEGER[], STRUCT(a INTEGER, b VARCHAR), MAP(VARCHAR, BIGINT), …) written with letters, digits, '_', spaces, ',', brackets only. primary_key names columns of the table; upsert uses it. An existing table is an error unless if_not_exists is true, which leaves it as it is.",
	`"required": ["table", "columns"],
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
	`{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}`,
	`{"table":"sales","columns":[{"name":"day","type":"DATE","not_null":true},{"name":"store","type":"VARCHAR"},{"name":"amount","type":"DECIMAL(18,2)"},{"name":"tags","type":"VARCHAR[]"}],"if_not_exists":true}`,
)

func (createTable) Schema() json.RawMessage { return createTableSchema }

func (f createTable) Validate(args json.RawMessage) error {
	_, err := f.parse(args)
	return err
}

func (f createTable) parseAny(args json.RawMessage) (any, error) { return f.parse(args) }

func (f createTable) parse(args json.RawMessage) (*createTableArgs, error) {
	fn := f.Name()
	var a createTableArgs
	if err := decodeArgs(fn, args, &a); err != nil {
		return nil, err
	}
	if err := checkTable(fn, a.Table); err != nil {
		return nil, err
	}
	if len(a.Columns) == 0 {
		return nil, invalid(fn, "columns is empty: give at least one {\"name\",\"type\"}")
	}
	if len(a.Columns) > MaxColumns {
		return nil, invalid(fn, "%d columns: at most %d are allowed", len(a.Columns), MaxColumns)
	}
	byName := make(map[string]string, len(a.Columns))
	for _, c := range a.Columns {
		if err := checkColumn(fn, "column name", c.Name); err != nil {
			return nil, err
		}
		folded := strings.ToLower(c.Name)
		if prev, dup := byName[folded]; dup {
			return nil, invalid(fn, "columns %q and %q are the same name to DuckDB (names are case-insensitive)", prev, c.Name)
		}
		byName[folded] = c.Name
		if err := checkType(fn, c.Name, c.Type); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for i, k := range a.PrimaryKey {
		if err := checkColumn(fn, "primary_key column", k); err != nil {
			return nil, err
		}
		c, ok := byName[strings.ToLower(k)]
		if !ok {
			return nil, invalid(fn, "primary_key column %s is not one of the columns", model.Quote(k))
		}
		if seen[c] {
			return nil, invalid(fn, "primary_key names column %q twice", c)
		}
		seen[c] = true
		a.PrimaryKey[i] = c
	}
	return &a, nil
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

// Apply creates the table. With if_not_exists and an existing table it
// changes nothing and returns an empty Result.
func (f createTable) Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error) {
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
	if exists {
		if a.IfNotExists {
			return Result{}, nil
		}
		return Result{}, invalid(fn, "table %q exists already with columns %s: drop it first, or pass \"if_not_exists\": true", t.Name, t.columnList())
	}
	if _, err := env.Conn.ExecContext(ctx, a.ddl()); err != nil {
		return Result{}, dbError(fn, "create table "+a.Table, err)
	}
	return Result{Tables: []string{a.Table}, Replaced: true}, nil
}
