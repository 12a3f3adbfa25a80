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

type sqlArgs struct {
	SQL string `json:"sql"`
}

// sqlSpec is sql: one raw SQL statement, privileged.
var sqlSpec = spec[sqlArgs]{
	Name:        "sql",
	Summary:     "run one raw SQL statement (privileged: only on models that enable it)",
	Privileged:  true,
	Description: "Runs one SQL statement on the model: SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER or DROP (MERGE INTO is not one of them: use upsert). Refused unless the model enables sql. Not allowed: ATTACH, DETACH, INSTALL, LOAD, COPY, EXPORT, IMPORT, SET, RESET, PRAGMA, CALL, USE, CHECKPOINT, VACUUM, transaction control, parameters, more than one statement, and any mention of teatree's _teatree schema. DuckDB's external access is off, so files cannot be read or written. The db-manager treats every table as changed.",
	Schema: `"required": ["sql"],
  "properties": {
    "sql": {"type": "string", "minLength": 1, "maxLength": 1048576, "pattern": "^[^\\x00]*$"}
  }`,
	Examples: []string{
		`{"sql":"ALTER TABLE t ADD COLUMN note VARCHAR"}`,
		`{"sql":"UPDATE t SET v = upper(v) WHERE id > 10"}`,
	},
	Check: checkSQL,
	Apply: applySQL,
}

// allowedStatements are the statement types sql runs.
var allowedStatements = map[duckdb.StmtType]bool{
	duckdb.STATEMENT_TYPE_SELECT:      true,
	duckdb.STATEMENT_TYPE_INSERT:      true,
	duckdb.STATEMENT_TYPE_UPDATE:      true,
	duckdb.STATEMENT_TYPE_DELETE:      true,
	duckdb.STATEMENT_TYPE_CREATE:      true,
	duckdb.STATEMENT_TYPE_CREATE_FUNC: true,
	duckdb.STATEMENT_TYPE_ALTER:       true,
	duckdb.STATEMENT_TYPE_DROP:        true,
}

// statementNames name the refused statement types in errors.
var statementNames = map[duckdb.StmtType]string{
	duckdb.STATEMENT_TYPE_EXPLAIN:      "EXPLAIN",
	duckdb.STATEMENT_TYPE_PREPARE:      "PREPARE",
	duckdb.STATEMENT_TYPE_EXECUTE:      "EXECUTE",
	duckdb.STATEMENT_TYPE_TRANSACTION:  "transaction control (BEGIN, COMMIT, ROLLBACK)",
	duckdb.STATEMENT_TYPE_COPY:         "COPY",
	duckdb.STATEMENT_TYPE_ANALYZE:      "ANALYZE",
	duckdb.STATEMENT_TYPE_VARIABLE_SET: "SET VARIABLE",
	duckdb.STATEMENT_TYPE_EXPORT:       "EXPORT DATABASE",
	duckdb.STATEMENT_TYPE_PRAGMA:       "PRAGMA",
	duckdb.STATEMENT_TYPE_VACUUM:       "VACUUM",
	duckdb.STATEMENT_TYPE_CALL:         "CALL or CHECKPOINT",
	duckdb.STATEMENT_TYPE_SET:          "SET, RESET or USE",
	duckdb.STATEMENT_TYPE_LOAD:         "INSTALL or LOAD",
	duckdb.STATEMENT_TYPE_ATTACH:       "ATTACH",
	duckdb.STATEMENT_TYPE_DETACH:       "DETACH",
	duckdb.STATEMENT_TYPE_MULTI:        "a statement that expands to several (PIVOT, IMPORT DATABASE)",
}

// deniedKeywords are first keywords of statements sql refuses, checked when
// the private parser cannot prepare the statement (it has no tables), so
// that Decode refuses e.g. COPY t TO … without the model.
var deniedKeywords = map[string]bool{
	"ATTACH": true, "DETACH": true, "INSTALL": true, "LOAD": true, "FORCE": true, "COPY": true,
	"EXPORT": true, "IMPORT": true, "SET": true, "RESET": true, "PRAGMA": true, "CALL": true,
	"USE": true, "CHECKPOINT": true, "VACUUM": true, "BEGIN": true, "START": true, "COMMIT": true,
	"END": true, "ROLLBACK": true, "ABORT": true, "PREPARE": true, "EXECUTE": true,
	"DEALLOCATE": true, "MERGE": true, "PIVOT": true, "UNPIVOT": true, "ANALYZE": true, "EXPLAIN": true,
	"SUMMARIZE": true, "DESCRIBE": true, "SHOW": true, "UPDATE EXTENSIONS": true,
}

// checkSQL checks the statement's text and prepares it, without running
// it, on the private parser: one statement of an allowed type.
func checkSQL(a *sqlArgs) error {
	if err := checkQueryText("sql", a.SQL); err != nil {
		return err
	}
	if strings.Contains(strings.ToLower(a.SQL), internalPrefix) {
		return invalid("sql mentions %q: teatree's own schema is off limits", internalPrefix)
	}
	if kw := firstKeyword(a.SQL); deniedKeywords[kw] {
		return invalid("%s statements are not allowed: use SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER or DROP", kw)
	}
	db, err := parserDB()
	if err != nil {
		return err
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		return prepareOne(dc, a.SQL, func(_ driver.Stmt, p prepared) error {
			return checkPrepared(p)
		})
	})
	var de *duckdb.Error
	switch {
	case err == nil:
	case errors.Is(err, model.ErrInvalid):
		return err
	case errors.Is(err, errMultiStatement):
		return invalid("sql holds more than one statement: give exactly one (submit several requests for several statements)")
	case errors.As(err, &de):
		switch de.Type {
		case duckdb.ErrorTypeParser, duckdb.ErrorTypeSyntax:
			return invalid("sql is not valid SQL: %s", firstLine(err))
		case duckdb.ErrorTypePermission:
			return invalid("sql reads or writes files, which is not allowed: %s", firstLine(err))
		}
		// Binding needs the model's tables: Apply checks the statement
		// type on the model itself.
	case strings.Contains(err.Error(), "empty query"):
		return invalid("sql holds no statement")
	default:
		return fmt.Errorf("parse sql: %w", err)
	}
	return nil
}

// checkPrepared refuses statement types sql does not run, and parameters.
func checkPrepared(p prepared) error {
	if !allowedStatements[p.Type] {
		name := statementNames[p.Type]
		if name == "" {
			name = "this kind of"
		}
		return invalid("%s statements are not allowed: use SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER or DROP", name)
	}
	if p.Params > 0 {
		return invalid("sql has parameters ($1 or ?): write the values into the statement")
	}
	return nil
}

// firstKeyword returns the first word of a statement in upper case, after
// white space, comments and opening parentheses ("UPDATE EXTENSIONS" for
// that statement). It is a guard for checkSQL only; applySQL checks the
// statement type DuckDB prepared.
func firstKeyword(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n\f\v(")
		switch {
		case strings.HasPrefix(s, "--"):
			if i := strings.IndexByte(s, '\n'); i >= 0 {
				s = s[i+1:]
				continue
			}
			return ""
		case strings.HasPrefix(s, "/*"):
			if i := strings.Index(s[2:], "*/"); i >= 0 {
				s = s[i+4:]
				continue
			}
			return ""
		}
		break
	}
	word := func(s string) string {
		end := strings.IndexFunc(s, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_') })
		if end < 0 {
			end = len(s)
		}
		return strings.ToUpper(s[:end])
	}
	kw := word(s)
	if kw == "UPDATE" {
		if next := word(strings.TrimLeft(s[len(kw):], " \t\r\n\f\v")); next == "EXTENSIONS" {
			return "UPDATE EXTENSIONS"
		}
	}
	return kw
}

// applySQL runs the statement after checking, on the model, that DuckDB
// prepares it as exactly one statement of an allowed type. The spec
// adapter refuses it unless env.AllowSQL.
func applySQL(ctx context.Context, env Env, a *sqlArgs) (Result, error) {
	env.Tables.Forget()
	var n int64
	err := env.Conn.Raw(func(dc any) error {
		return prepareOne(dc, a.SQL, func(st driver.Stmt, p prepared) error {
			if err := checkPrepared(p); err != nil {
				return err
			}
			res, err := st.(driver.StmtExecContext).ExecContext(ctx, nil)
			if err != nil {
				return err
			}
			n, _ = res.RowsAffected()
			return nil
		})
	})
	switch {
	case err == nil:
		return Result{AllTables: true, Rows: n}, nil
	case errors.Is(err, model.ErrInvalid):
		return Result{}, err
	case errors.Is(err, errMultiStatement):
		return Result{}, invalid("sql holds more than one statement: give exactly one")
	}
	return Result{}, dbError("run sql", err)
}
