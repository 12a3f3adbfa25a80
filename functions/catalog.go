package functions

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// column is a column of a table or a file, in order.
type column struct {
	Name string
	Type string // DuckDB's spelling, e.g. "BIGINT", "INTEGER[]"
}

// table is a table in schema main of the model as the catalog spells it.
type table struct {
	Name    string
	Columns []column
	exact   map[string]int // column name → index
	folded  map[string]int // lower-case column name → index
}

// index fills the name indexes of t.
func (t *table) index() {
	t.exact = make(map[string]int, len(t.Columns))
	t.folded = make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		t.exact[c.Name] = i
		t.folded[strings.ToLower(c.Name)] = i
	}
}

// qualified is the quoted, schema-qualified name of the table.
func qualified(name string) string {
	return "main." + duck.Ident(name)
}

// lookupTable finds table name (matched case-insensitively, as DuckDB
// matches identifiers) in schema main of the current database. ok is false
// when there is no such table. The queries cannot fail on a healthy
// connection, so they never abort the caller's transaction.
func lookupTable(ctx context.Context, conn *sql.Conn, name string) (t table, ok bool, err error) {
	rows, err := conn.QueryContext(ctx, `SELECT t.table_name, c.column_name, c.data_type
FROM duckdb_tables() t JOIN duckdb_columns() c ON c.table_oid = t.table_oid
WHERE t.database_name = current_database() AND t.schema_name = 'main' AND lower(t.table_name) = lower(?)
ORDER BY c.column_index`, name)
	if err != nil {
		return table{}, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var c column
		if err := rows.Scan(&t.Name, &c.Name, &c.Type); err != nil {
			return table{}, false, err
		}
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return table{}, false, err
	}
	t.index()
	return t, t.Name != "", nil
}

// mustTable is lookupTable for a table that must exist, answered from
// env.Tables when it holds the table.
func mustTable(ctx context.Context, env Env, name string) (table, error) {
	key := strings.ToLower(name)
	if t, ok := env.Tables.get(key); ok {
		return t, nil
	}
	t, ok, err := lookupTable(ctx, env.Conn, name)
	if err != nil {
		return table{}, fmt.Errorf("look up table %s: %w", name, err)
	}
	if !ok {
		return table{}, invalid("table %q does not exist in schema main: create it first (create_table)", name)
	}
	env.Tables.put(key, t)
	return t, nil
}

// TableCache keeps the tables looked up by the data functions (append of
// rows, update, delete, upsert), so that small requests read the catalog
// once per table instead of once per request or per batch. The functions
// that change the schema (create_table, drop_table, refresh, derive, sql,
// wasm, append of a file or a source) empty it. A cache may be kept
// across transactions by a caller that calls Forget whenever the schema
// may change outside those functions: a rollback (what the transaction
// cached may be undone), a refresh of derived tables, another file. A nil
// *TableCache caches nothing.
type TableCache struct{ tables map[string]table }

// NewTableCache returns an empty cache.
func NewTableCache() *TableCache { return &TableCache{tables: map[string]table{}} }

func (c *TableCache) get(key string) (table, bool) {
	if c == nil {
		return table{}, false
	}
	t, ok := c.tables[key]
	return t, ok
}

func (c *TableCache) put(key string, t table) {
	if c != nil {
		c.tables[key] = t
	}
}

// Forget empties the cache: the schema may change (see TableCache).
func (c *TableCache) Forget() {
	if c != nil {
		clear(c.tables)
	}
}

// primaryKey returns the primary-key columns of table name, or nil.
func primaryKey(ctx context.Context, conn *sql.Conn, name string) ([]string, error) {
	rows, err := conn.QueryContext(ctx, `SELECT unnest(constraint_column_names)
FROM duckdb_constraints()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? AND constraint_type = 'PRIMARY KEY'`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var key []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		key = append(key, c)
	}
	return key, rows.Err()
}

// resolve maps names given by a request to the table's columns: an exact
// match first, then a case-insensitive one (DuckDB's own rule). An unknown
// name, or two names for one column, is an error naming it and listing the
// table's columns.
func (t table) resolve(what string, names []string) ([]string, error) {
	idx, err := t.resolveIdx(what, names)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = t.Columns[j].Name
	}
	return out, nil
}

// resolveIdx is resolve returning column indexes.
func (t table) resolveIdx(what string, names []string) ([]int, error) {
	out := make([]int, len(names))
	used := make(map[int]string, len(names))
	for i, n := range names {
		j, ok := t.exact[n]
		if !ok {
			j, ok = t.folded[strings.ToLower(n)]
		}
		if !ok {
			return nil, invalid("%s %s is not a column of table %s: its columns are %s", what, model.Quote(n), t.Name, t.columnList())
		}
		if prev, dup := used[j]; dup {
			return nil, invalid("%s %s and %s both name column %q of table %s", what, model.Quote(prev), model.Quote(n), t.Columns[j].Name, t.Name)
		}
		used[j] = n
		out[i] = j
	}
	return out, nil
}

// columnList lists the table's columns with their types for error messages.
func (t table) columnList() string {
	return columnList(t.Columns)
}

// The list is cut by model.Excerpt: a file can have thousands of columns.
func columnList(cs []column) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = duck.Ident(c.Name) + " " + c.Type
	}
	return "(" + model.Excerpt(strings.Join(parts, ", "), model.MaxErrorText) + ")"
}

// bindValue converts a decoded JSON value for column i of the table by the
// strict rules of coerce; bind it with placeholder(type).
func (t table) bindValue(i int, v any) (any, error) {
	return coerce(t.Columns[i].Type, v)
}

// wholeNumber reports whether n, a JSON number, has no fractional part
// (2, 2.0, 2.5e1 and 1e400 do; 2.5 and 25e-1 do not). It does not build
// a huge number, so a huge exponent costs nothing.
func wholeNumber(n string) bool {
	_, whole, _ := scaledInteger(n, 0, 40)
	return whole
}

// countRows counts the rows of table name. DuckDB reports no changed rows
// for CREATE TABLE AS, so the functions that create a table from a query
// count them.
func countRows(ctx context.Context, conn *sql.Conn, name string) (int64, error) {
	var n int64
	err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+qualified(name)).Scan(&n)
	return n, err
}
