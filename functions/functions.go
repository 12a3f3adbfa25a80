package functions

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/model"
)

// Env is what a function may use while it applies.
type Env struct {
	// Conn is a DuckDB connection on which the caller has issued BEGIN
	// TRANSACTION. A function must not commit or roll back; the caller does
	// (group commit of a whole batch). If Apply returns an error the caller
	// rolls back the whole transaction and re-applies the batch without
	// this request.
	Conn *sql.Conn
	// Payload fetches a staged payload (uri like
	// "staging/<model>/<request_id>/f.parquet", a key in the object store) to a
	// local file inside a directory DuckDB is allowed to read, and returns
	// the local path. Errors from it are returned as they are. append
	// writes a temporary file next to the returned path when it converts
	// an Arrow IPC payload, so the directory must be writable too.
	Payload func(ctx context.Context, uri string) (path string, err error)
	// Sources are the Postgres sources append may read (args.source):
	// name → DSN, configured on the db-manager, never in a request. nil:
	// none.
	Sources map[string]string
	// AllowSQL is true when the model enables the privileged `sql`
	// function.
	AllowSQL bool
	// Tables caches table lookups for the rest of the transaction
	// (NewTableCache); nil looks every table up.
	Tables *TableCache
}

// Result says what an applied function changed.
type Result struct {
	// Tables are the tables (in schema main) created, changed or dropped,
	// spelled as the catalog spells them. Empty when nothing changed (an
	// update that matched no row still lists its table).
	Tables []string
	// AllTables is true when the function may have changed any table (sql).
	AllTables bool
	// Appended is true when the function only added rows to Tables (or
	// created them): every row a table had before is unchanged. The
	// db-manager then archives only the new rows.
	Appended bool
	// Replaced is true when the function created, dropped or re-created
	// Tables (create_table, drop_table, refresh): the db-manager archives
	// them whole.
	Replaced bool
	// Rows is the number of rows inserted, updated or deleted; 0 for DDL.
	Rows int64
}

// Function is one function a request can call. Implementations are
// stateless and safe for concurrent use.
type Function interface {
	// Name is the function's name as requests spell it, e.g. "append".
	Name() string
	// Summary is one line for `teactl functions`.
	Summary() string
	// Schema is the JSON Schema (draft 2020-12) of the args object. Its
	// "examples" are valid args.
	Schema() json.RawMessage
	// Validate checks args without touching any model: shape, types,
	// identifiers, ops. Errors wrap model.ErrInvalid and say what to do.
	// It may use a private in-memory DuckDB to parse column types and SQL;
	// an error from that DuckDB itself (not from the args) does not wrap
	// model.ErrInvalid.
	Validate(args json.RawMessage) error
	// Apply validates args again and applies them on env.Conn inside the
	// caller's transaction. Errors that are the request's fault (bad args,
	// a missing table, a schema mismatch, a bad file, a constraint
	// violation) wrap model.ErrInvalid; DuckDB errors keep their
	// *duckdb.Error in the chain (so callers can spot fatal and I/O
	// errors), and errors from env.Payload and ctx are returned as they
	// are, wrapped with context only.
	Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error)
}

// registry holds every function by name.
var registry = map[string]Function{}

func register(f Function) {
	if _, dup := registry[f.Name()]; dup {
		panic("functions: duplicate function " + f.Name())
	}
	registry[f.Name()] = f
}

func init() {
	register(createTable{})
	register(appendFn{})
	register(upsert{})
	register(update{})
	register(deleteFn{})
	register(refresh{})
	register(dropTable{})
	register(sqlFn{})
}

// All returns every function, sorted by name.
func All() []Function {
	fs := make([]Function, 0, len(registry))
	for _, f := range registry {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name() < fs[j].Name() })
	return fs
}

// names returns the sorted function names.
func names() []string {
	ns := make([]string, 0, len(registry))
	for n := range registry {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Lookup returns the function called name. An unknown name is an error
// wrapping model.ErrInvalid that lists the known names.
func Lookup(name string) (Function, error) {
	if f, ok := registry[name]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("%w: unknown function %s: use one of %s", model.ErrInvalid, model.Quote(name), strings.Join(names(), ", "))
}

// ValidateRequest checks a decoded request end to end without a model: the
// function is known, its args are valid, `sql` is called only when
// allowSQL, and a payload is one staged for this request, under
// staging/<r.Model>/<r.ID>/ (model.CheckStagedKey). The dispatcher and the
// db-manager both call it, so they reach the same verdict. Errors wrap
// model.ErrInvalid and name the request.
func ValidateRequest(r model.Request, allowSQL bool) error {
	f, err := Lookup(r.Function)
	if err != nil {
		return fmt.Errorf("request %s: %w", r.ID, err)
	}
	if f.Name() == sqlName && !allowSQL {
		return fmt.Errorf("request %s: %w", r.ID, errSQLDisabled)
	}
	if err := f.Validate(r.Args); err != nil {
		return fmt.Errorf("request %s: %w", r.ID, err)
	}
	if uri := PayloadURI(r.Args); uri != "" {
		if err := model.CheckStagedKey(r.Model, r.ID, uri); err != nil {
			return fmt.Errorf("request %s: %s: %w", r.ID, f.Name(), err)
		}
	}
	return nil
}

// PayloadURI returns args.payload.uri, the staged payload a request's
// args reference, or "" when there is none (or args do not decode).
func PayloadURI(args json.RawMessage) string {
	var a struct {
		Payload struct {
			URI string `json:"uri"`
		} `json:"payload"`
	}
	if json.Unmarshal(args, &a) != nil {
		return ""
	}
	return a.Payload.URI
}

// invalid returns an error wrapping model.ErrInvalid for function fn.
func invalid(fn, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", model.ErrInvalid, fn, fmt.Sprintf(format, args...))
}

// dbError wraps err, an error DuckDB returned while fn applied, with
// context. DuckDB errors that are the request's fault also wrap
// model.ErrInvalid; I/O, memory, interrupt, transaction, fatal and internal
// errors do not. The *duckdb.Error stays in the chain either way; its
// message, which can echo values and SQL, is cut by model.Shorten.
func dbError(fn, what string, err error) error {
	var de *duckdb.Error
	if errors.As(err, &de) && requestFault(de.Type) {
		return fmt.Errorf("%w: %s: %s: %w", model.ErrInvalid, fn, what, model.Shorten(err))
	}
	return fmt.Errorf("%s: %s: %w", fn, what, model.Shorten(err))
}

// requestFault reports whether a DuckDB error of type t is caused by what
// the request asked for rather than by the machine.
func requestFault(t duckdb.ErrorType) bool {
	switch t {
	case duckdb.ErrorTypeIO, duckdb.ErrorTypeOutOfMemory, duckdb.ErrorTypeInterrupt,
		duckdb.ErrorTypeTransaction, duckdb.ErrorTypeConnection, duckdb.ErrorTypeFatal,
		duckdb.ErrorTypeInternal, duckdb.ErrorTypeNetwork, duckdb.ErrorTypeHTTP,
		duckdb.ErrorTypeSerialization, duckdb.ErrorTypeInvalid:
		return false
	}
	return true
}
