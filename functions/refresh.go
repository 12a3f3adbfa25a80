package functions

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/model"
)

type refreshArgs struct {
	Table string `json:"table"`
	Query string `json:"query"`
	// Reads are other models' versions the query reads, by alias.
	Reads map[string]ReadRef `json:"reads,omitempty"`
}

// tableQuerySchema is the args schema of refresh and derive: a table,
// one SELECT and the other models it reads (derive refuses reads).
const tableQuerySchema = `"required": ["table", "query"],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "query": {"type": "string", "minLength": 1, "maxLength": 1048576, "pattern": "^[^\\x00]*$"},
    ` + readsSchema + `
  }`

// refreshSpec is refresh: materialise a derived table from one SELECT
// over the model.
var refreshSpec = spec[refreshArgs]{
	Name:        "refresh",
	Summary:     "materialise a derived table from one SELECT over the model's tables (CREATE OR REPLACE TABLE … AS SELECT)",
	Description: "Replaces main.<table> with the result of query: CREATE OR REPLACE TABLE main.<table> AS <query>. The query is one SELECT statement (SELECT, FROM-first, WITH, VALUES, UNION/EXCEPT/INTERSECT) over tables of schema main, checked with DuckDB's own parser: it may not call table functions (read_csv, read_parquet, glob, range, query, duckdb_tables, …), read files by name ('f.csv'), use DESCRIBE/SHOW/SUMMARIZE, other schemas or databases, teatree's _teatree tables, or parameters. reads names other models' published versions by alias; the query reads their tables as alias.t (schema main of that version, attached read-only for this request).",
	Schema:      tableQuerySchema,
	Examples: []string{
		`{"table":"monthly_sales","query":"SELECT date_trunc('month', day) AS month, store, sum(amount) AS amount FROM sales GROUP BY ALL"}`,
		`{"table":"top_customers","query":"WITH c AS (SELECT customer, count(*) AS n FROM orders GROUP BY customer) FROM c ORDER BY n DESC LIMIT 100"}`,
		`{"table":"delays_by_carrier","query":"SELECT carrier, avg(dep_delay) AS dep_delay FROM fl.flights GROUP BY ALL","reads":{"fl":{"model":"flights","version":3}}}`,
	},
	Check: checkRefresh,
	Apply: applyRefresh,
}

// checkRefresh checks the table and parses the query once with DuckDB's
// own parser, walking its AST (checkSelectTree).
func checkRefresh(a *refreshArgs) error {
	if err := checkTable(a.Table); err != nil {
		return err
	}
	if err := checkReads(a.Reads); err != nil {
		return err
	}
	node, err := selectNode(a.Query)
	if err != nil {
		return err
	}
	return selectChecker{reads: a.Reads}.tree(node)
}

// selectNode checks that query is exactly one SELECT statement (SELECT,
// FROM, WITH, VALUES or a set operation of them) and returns its AST.
func selectNode(query string) (map[string]any, error) {
	if err := checkQueryText("query", query); err != nil {
		return nil, err
	}
	node, err := parseSelect(query)
	if err != nil {
		return nil, err
	}
	switch t, _ := node["type"].(string); t {
	case "SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE":
		return node, nil
	default:
		return nil, invalid("query is a %s, not a SELECT", t)
	}
}

// ValidateSelect checks that query is exactly one SELECT statement, as
// `teactl query` requires; the error wraps model.ErrInvalid. Unlike a
// refresh, a read query may use table functions: it runs on a read-only
// snapshot with external access disabled.
func ValidateSelect(query string) error {
	if _, err := selectNode(query); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	return nil
}

// checkQueryText checks SQL text before DuckDB parses it.
func checkQueryText(what, q string) error {
	switch {
	case strings.TrimSpace(q) == "":
		return invalid("%s is empty", what)
	case len(q) > MaxSQLLen:
		return invalid("%s is %d bytes long: at most %d are allowed", what, len(q), MaxSQLLen)
	case strings.IndexByte(q, 0) >= 0:
		return invalid("%s contains a NUL byte", what)
	}
	return nil
}

// deniedFunctions are function names (lower case; a trailing '*' matches a
// prefix) a refresh query may not call anywhere, as a table function or a
// scalar: they read files, the catalog, settings or sequences, or run SQL.
var deniedFunctions = []string{
	"read_*", "glob", "parquet_*", "sniff_*", "query", "query_table", "json_execute_serialized_sql",
	"iceberg_*", "delta_*", "sqlite_*", "postgres_*", "mysql_*", "http*", "s3*",
	"duckdb_*", "pragma_*", "checkpoint", "force_checkpoint", "getenv", "current_setting",
	"nextval", "setval", "currval", "which_secret", "load_*", "install_*", "sql_auto_complete",
	"test_*", "enable_*", "disable_*", "export_*", "import_*",
}

// deniedFunction reports whether a refresh query may not call name.
func deniedFunction(name string) bool {
	name = strings.ToLower(name)
	for _, d := range deniedFunctions {
		if p, ok := strings.CutSuffix(d, "*"); ok {
			if strings.HasPrefix(name, p) {
				return true
			}
		} else if name == d {
			return true
		}
	}
	return false
}

// deniedTablePrefixes start names of DuckDB's system views, which show
// the catalog (teatree's own tables included).
var deniedTablePrefixes = []string{"duckdb_", "pg_", "sqlite_", "information_schema"}

// checkSelectTree walks the serialized AST of a SELECT (from
// json_serialize_sql) and refuses what would let a refresh read anything
// but tables of schema main: table functions, replacement scans of files
// ('f.csv' parses as a table name), DESCRIBE/SHOW/SUMMARIZE, qualified
// names outside main, teatree's _teatree tables, denied functions,
// parameters.
func checkSelectTree(v any) error { return selectChecker{}.tree(v) }

// selectChecker is checkSelectTree for a query that may also read the
// tables of schema main of the databases attached under the aliases of
// reads (alias.t or alias.main.t).
type selectChecker struct {
	reads map[string]ReadRef
}

func (c selectChecker) tree(v any) error {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if err := c.tree(e); err != nil {
				return err
			}
		}
	case map[string]any:
		if err := c.node(v); err != nil {
			return err
		}
		for _, e := range v {
			if err := c.tree(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// read reports whether catalog.schema names schema main of an alias of
// c.reads: alias.t parses as schema alias, alias.main.t as catalog alias.
func (c selectChecker) read(catalog, schema string) bool {
	if len(c.reads) == 0 {
		return false
	}
	if catalog == "" {
		_, ok := c.reads[strings.ToLower(schema)]
		return ok
	}
	_, ok := c.reads[strings.ToLower(catalog)]
	return ok && (schema == "" || strings.EqualFold(schema, "main"))
}

// node checks one object of the AST.
func (c selectChecker) node(n map[string]any) error {
	str := func(k string) string { s, _ := n[k].(string); return s }
	if name := str("function_name"); name != "" && deniedFunction(name) {
		return invalid("query calls %s(): a refresh reads only tables of schema main, so functions that read files, the catalog, settings or sequences are not allowed", name)
	}
	switch str("type") {
	case "TABLE_FUNCTION":
		name := "a table function"
		if f, ok := n["function"].(map[string]any); ok {
			if s, ok := f["function_name"].(string); ok {
				name = model.Excerpt(s, model.MaxExcerpt) + "()"
			}
		}
		return invalid("query reads from %s: a refresh may read only tables of schema main (no table functions such as read_csv, range or unnest in FROM)", name)
	case "SHOW_REF":
		return invalid("query uses DESCRIBE, SHOW or SUMMARIZE: a refresh may read only tables of schema main")
	case "VALUE_PARAMETER":
		return invalid("query has a parameter ($1 or ?): write the values into the query")
	case "BASE_TABLE":
		table, schema, catalog := str("table_name"), str("schema_name"), str("catalog_name")
		if (catalog != "" || (schema != "" && !strings.EqualFold(schema, "main"))) && !c.read(catalog, schema) {
			return invalid("query reads %s: a refresh may read only tables of schema main (write main.t or t) and, of another model named in reads, alias.t", model.Quote(strings.Trim(catalog+"."+schema+"."+table, ".")))
		}
		if !tablePattern.MatchString(table) {
			return invalid("query reads %s, which is not a table name (a file name? files cannot be read in a refresh)", model.Quote(table))
		}
		lower := strings.ToLower(table)
		if strings.HasPrefix(lower, internalPrefix) {
			return invalid("query reads %q: teatree's own tables are not readable", table)
		}
		for _, p := range deniedTablePrefixes {
			if strings.HasPrefix(lower, p) {
				return invalid("query reads %q: DuckDB's system views are not readable in a refresh", table)
			}
		}
	}
	return nil
}

// applyRefresh replaces the table with the query's result. The query was
// checked by checkRefresh; DuckDB parses it once more here, as part of
// the statement it runs.
func applyRefresh(ctx context.Context, env Env, a *refreshArgs) (Result, error) {
	env.Tables.Forget()
	// A newline ends a trailing "-- comment" of the query.
	stmt := "CREATE OR REPLACE TABLE " + qualified(a.Table) + " AS\n" + a.Query + "\n"
	err := env.Conn.Raw(func(dc any) error {
		return prepareOne(dc, stmt, func(st driver.Stmt, p prepared) error {
			if p.Type != duckdb.STATEMENT_TYPE_CREATE {
				return invalid("query does not make one CREATE TABLE AS statement")
			}
			_, err := st.(driver.StmtExecContext).ExecContext(ctx, nil)
			return err
		})
	})
	if errors.Is(err, errMultiStatement) {
		return Result{}, invalid("query does not make one CREATE TABLE AS statement")
	}
	if err != nil {
		if errors.Is(err, model.ErrInvalid) {
			return Result{}, err
		}
		return Result{}, dbError(fmt.Sprintf("refresh table %s", a.Table), err)
	}
	n, err := countRows(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("count rows of "+a.Table, err)
	}
	return Result{Tables: []string{a.Table}, Rows: n, Replaced: true}, nil
}
