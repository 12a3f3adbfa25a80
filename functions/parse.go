package functions

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// The parser is a private in-memory DuckDB that Decode (Check) uses to parse
// column types and SQL exactly as the model's DuckDB will, without a model.
// It has no tables, external access is off and no directory is allowed, so
// nothing parsed there can read or write a file.
var parser struct {
	once sync.Once
	db   *sql.DB
	err  error
}

// parserRuns counts the statements run on the private parser (each parses
// SQL once); tests read it to show that a request is checked once.
var parserRuns atomic.Int64

// parserDB returns the private parser; every caller runs one statement.
func parserDB() (*sql.DB, error) {
	parserRuns.Add(1)
	parser.once.Do(func() {
		parser.db, parser.err = duck.Open(context.Background(), "", duck.Options{Threads: 1, MemoryLimit: "64MB"})
		if parser.err != nil {
			parser.err = fmt.Errorf("functions: open the private parser DuckDB: %w", parser.err)
		}
	})
	return parser.db, parser.err
}

// firstLine returns the first line of a DuckDB error message (the rest is
// a caret picture of the query or a long list of hints).
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return model.Excerpt(s, model.MaxErrorText)
}

// typeChars are the characters a column type may hold: names, sizes,
// nested types (STRUCT(a INTEGER), MAP(VARCHAR, BIGINT), INTEGER[3]). No
// quotes, semicolons, comment starters or operators.
func typeChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '_' || r == ' ' || r == '(' || r == ')' || r == ',' || r == '[' || r == ']'
}

// checkType reports whether typ is a DuckDB column type that may be pasted
// into DDL: only typeChar characters, balanced brackets (so it cannot end
// the surrounding CAST or column list), and DuckDB parses and binds
// CAST(NULL AS typ) on the private parser.
func checkType(col, typ string) error {
	what := "column " + model.Quote(col) + ": type"
	if strings.TrimSpace(typ) == "" {
		return invalid("%s is empty: give a DuckDB type such as BIGINT, VARCHAR, DOUBLE, TIMESTAMP, DECIMAL(18,2), INTEGER[]", what)
	}
	if len(typ) > MaxTypeLen {
		return invalid("%s is %d bytes long: at most %d are allowed", what, len(typ), MaxTypeLen)
	}
	var stack []rune
	for _, r := range typ {
		if !typeChar(r) {
			return invalid("%s %s has the character %q: a type may hold only letters, digits, '_', spaces, ',', '(', ')', '[' and ']'", what, model.Quote(typ), r)
		}
		switch r {
		case '(', '[':
			stack = append(stack, r)
		case ')', ']':
			open := '('
			if r == ']' {
				open = '['
			}
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return invalid("%s %s has unbalanced brackets", what, model.Quote(typ))
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return invalid("%s %s has unbalanced brackets", what, model.Quote(typ))
	}
	db, err := parserDB()
	if err != nil {
		return err
	}
	var name string
	if err := db.QueryRowContext(context.Background(), "SELECT typeof(CAST(NULL AS "+typ+"))").Scan(&name); err != nil {
		var de *duckdb.Error
		if errors.As(err, &de) {
			return invalid("%s %s is not a DuckDB type: %s", what, model.Quote(typ), firstLine(err))
		}
		return fmt.Errorf("check %s: %w", what, err)
	}
	return nil
}

// serialized is the output of DuckDB's json_serialize_sql.
type serialized struct {
	Error        bool   `json:"error"`
	ErrorType    string `json:"error_type"`
	ErrorMessage string `json:"error_message"`
	Statements   []struct {
		Node map[string]any `json:"node"`
	} `json:"statements"`
}

// parseSelect parses query with DuckDB's own parser (json_serialize_sql on
// the private parser) and returns the AST of its one statement. Errors:
// not exactly one statement, not a SELECT, a syntax error.
func parseSelect(query string) (map[string]any, error) {
	db, err := parserDB()
	if err != nil {
		return nil, err
	}
	var out string
	if err := db.QueryRowContext(context.Background(), "SELECT CAST(json_serialize_sql(CAST(? AS VARCHAR)) AS VARCHAR)", query).Scan(&out); err != nil {
		var de *duckdb.Error
		if errors.As(err, &de) {
			return nil, invalid("query cannot be parsed: %s", firstLine(err))
		}
		return nil, fmt.Errorf("parse query: %w", err)
	}
	var s serialized
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		// Nesting beyond encoding/json's limit, for one.
		return nil, invalid("query is too complex to check: %v", model.Shorten(err))
	}
	switch {
	case s.Error && s.ErrorType == "not implemented":
		return nil, invalid("query must be one SELECT statement (SELECT, FROM, WITH, VALUES or a set operation of them); other statements are not allowed")
	case s.Error:
		return nil, invalid("query is not valid SQL: %s", model.Excerpt(s.ErrorMessage, model.MaxErrorText))
	case len(s.Statements) == 0:
		return nil, invalid("query is empty: give one SELECT statement")
	case len(s.Statements) > 1:
		return nil, invalid("query has %d statements: give exactly one SELECT statement", len(s.Statements))
	}
	return s.Statements[0].Node, nil
}

// prepared is what preparing one statement told.
type prepared struct {
	Type   duckdb.StmtType
	Params int
}

// errMultiStatement marks SQL text holding more than one statement.
var errMultiStatement = errors.New("more than one statement")

// prepareOne prepares query, which must be exactly one statement, on the
// driver connection dc without executing it, and calls use with the
// prepared statement. The driver's Prepare (unlike PrepareContext) refuses
// more than one statement instead of executing all but the last.
func prepareOne(dc any, query string, use func(st driver.Stmt, p prepared) error) error {
	conn, ok := dc.(driver.Conn)
	if !ok {
		return fmt.Errorf("not a DuckDB driver connection: %T", dc)
	}
	st, err := conn.Prepare(query)
	if err != nil {
		if strings.Contains(err.Error(), "multi-statement") {
			return errMultiStatement
		}
		return err
	}
	defer st.Close()
	ds, ok := st.(*duckdb.Stmt)
	if !ok {
		return fmt.Errorf("not a DuckDB statement: %T", st)
	}
	t, err := ds.StatementType()
	if err != nil {
		return err
	}
	return use(st, prepared{Type: t, Params: st.NumInput()})
}
