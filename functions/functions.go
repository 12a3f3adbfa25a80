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
	"github.com/teatree/teatree/udf"
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
	// Rows, when set, takes the rows of appends of inline rows instead of
	// inserting them (RowBuffer); the caller flushes it. nil: each append
	// inserts its rows.
	Rows *RowBuffer
	// WASM compiles and runs WebAssembly modules (register_module,
	// wasm); nil: those functions fail, not enabled.
	WASM *udf.Host
	// WASMLimits caps every module instance (zero: udf's defaults).
	WASMLimits udf.Limits
	// Modules stores and fetches the model's modules; nil: as WASM.
	Modules ModuleStore
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
	// Modules are the digests (sha256 hex) of the WebAssembly modules the
	// call ran or registered (wasm, register_module); the db-manager
	// records them in the lineage of the version (model.Lineage.Modules).
	Modules []string
	// WASMBatches and WASMCopied are what a wasm call cost in copies: the
	// input batches it handed to its module and the bytes copied for them
	// (the input's IPC encoding, into and out of the module's memory, the
	// output's IPC bytes). For the benchmark (teabench scenario 6).
	WASMBatches int
	WASMCopied  int64
}

// Function is one function a request can call. Implementations are
// stateless and safe for concurrent use. Every function is a spec (see
// spec) registered in init.
type Function interface {
	// Name is the function's name as requests spell it, e.g. "append".
	Name() string
	// Summary is one line for `teactl functions`.
	Summary() string
	// Schema is the JSON Schema (draft 2020-12) of the args object, the one
	// Decode enforces. Its "examples" are valid args.
	Schema() json.RawMessage
	// Privileged is true for a function a model must enable (sql).
	Privileged() bool
	// Decode checks args without touching any model and returns the call,
	// ready to apply: the args decode strictly into the function's args
	// type (shape, types), pass its checks (identifiers, ops, column types
	// and SQL parsed by a private in-memory DuckDB) and its JSON schema.
	// Errors wrap model.ErrInvalid, start with the function's name and say
	// what to do; an error from the private DuckDB itself (not from the
	// args) does not wrap model.ErrInvalid.
	Decode(args json.RawMessage) (Call, error)
}

// Call is a function call whose args are decoded and checked
// (Function.Decode), ready to apply. Apply may run more than once (the
// db-manager applies a batch again without a request that failed).
type Call interface {
	// Function is the function called.
	Function() Function
	// Apply applies the call on env.Conn inside the caller's transaction.
	// Errors start with the function's name. Those that are the request's
	// fault (a missing table, a schema mismatch, a bad file, a constraint
	// violation) wrap model.ErrInvalid; DuckDB errors keep their
	// *duckdb.Error in the chain (so callers can spot fatal and I/O
	// errors), and errors from env.Payload and ctx are returned as they
	// are, wrapped with context only. A privileged function fails unless
	// env.AllowSQL.
	Apply(ctx context.Context, env Env) (Result, error)
}

// registry holds every function by name.
var registry = map[string]Function{}

func init() {
	register(createTableSpec)
	register(appendSpec)
	register(upsertSpec)
	register(updateSpec)
	register(deleteSpec)
	register(refreshSpec)
	register(deriveSpec)
	register(dropTableSpec)
	register(sqlSpec)
	register(registerModuleSpec)
	register(wasmSpec)
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

// Prepare checks a decoded request end to end without a model and returns
// its call, ready to apply: the function is known, it is privileged (sql)
// only when allowSQL, its args decode (Function.Decode), and a payload is
// one staged for this request, under staging/<r.Model>/<r.ID>/
// (model.CheckStagedKey). The dispatcher (through ValidateRequest) and the
// db-manager both call it, so they reach the same verdict. Errors wrap
// model.ErrInvalid and name the request.
func Prepare(r model.Request, allowSQL bool) (Call, error) {
	f, err := Lookup(r.Function)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", r.ID, err)
	}
	if f.Privileged() && !allowSQL {
		return nil, fmt.Errorf("request %s: %s: %w", r.ID, f.Name(), errPrivileged(f.Name()))
	}
	c, err := f.Decode(r.Args)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", r.ID, err)
	}
	if err := checkReadsOf(r.Model, ReadsOf(r.Args)); err != nil {
		return nil, fmt.Errorf("request %s: %s: %w", r.ID, f.Name(), err)
	}
	if uri := PayloadURI(r.Args); uri != "" {
		if err := model.CheckStagedKey(r.Model, r.ID, uri); err != nil {
			return nil, fmt.Errorf("request %s: %s: %w", r.ID, f.Name(), err)
		}
	}
	return c, nil
}

// ValidateRequest is Prepare for a caller that does not apply the request
// (the dispatcher, teactl).
func ValidateRequest(r model.Request, allowSQL bool) error {
	_, err := Prepare(r, allowSQL)
	return err
}

// errPrivileged is the error for a privileged function on a model that
// does not enable it.
func errPrivileged(name string) error {
	return fmt.Errorf("%w: the privileged %s function is not enabled for this model: use the typed functions (teactl functions), or have an operator enable %s for the model", model.ErrInvalid, name, name)
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

// invalid returns an error wrapping model.ErrInvalid. The function's
// name is added in one place, by the spec adapter (spec.go).
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, args...))
}

// dbError wraps err, an error DuckDB returned while a function applied, with
// context. DuckDB errors that are the request's fault also wrap
// model.ErrInvalid; I/O, memory, interrupt, transaction, fatal and internal
// errors do not. The *duckdb.Error stays in the chain either way; its
// message, which can echo values and SQL, is cut by model.Shorten.
func dbError(what string, err error) error {
	var de *duckdb.Error
	if errors.As(err, &de) && requestFault(de.Type) {
		return fmt.Errorf("%w: %s: %w", model.ErrInvalid, what, model.Shorten(err))
	}
	return fmt.Errorf("%s: %w", what, model.Shorten(err))
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
