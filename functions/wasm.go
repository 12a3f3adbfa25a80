package functions

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/udf"
)

// ModuleStore keeps the WebAssembly modules of a model: the db-manager's
// is content-addressed in the object store and recorded in Postgres.
type ModuleStore interface {
	// Put stores wasm (validated, info.Digest its digest) and records
	// the registration of name. It is idempotent: registering the same
	// bytes under the same name again changes nothing.
	Put(ctx context.Context, name string, info udf.Info, wasm []byte) error
	// Get returns the module of digest. An error wrapping
	// model.ErrNotFound when there is none.
	Get(ctx context.Context, digest string) ([]byte, error)
}

// MaxModuleBytes is the largest module register_module accepts (64 MiB;
// a Go module built with the SDK is about 14 MB).
const MaxModuleBytes = 64 << 20

// MaxParamsBytes is the longest params object of a wasm call, encoded.
const MaxParamsBytes = 64 << 10

// MaxWasmOutputBytes bounds the memory the decoded output of one wasm
// call may take (it is held until the input query ends: 1 GiB).
const MaxWasmOutputBytes = 1 << 30

// modulePattern is a module name: like a table name, with '-' and '.'.
var modulePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,62}$`)

func checkModuleName(name string) error {
	if !modulePattern.MatchString(name) {
		return invalid("module %s is not a valid module name: use 1 to 63 letters, digits, '_', '-' and '.', starting with a letter or '_'", model.Quote(name))
	}
	return nil
}

// modulesTable binds module names to digests inside the model's database,
// so that a call resolves its module in request order (a replay of the
// request log resolves to the same digests) and a snapshot carries the
// bindings.
const modulesTable = `CREATE SCHEMA IF NOT EXISTS _teatree;
CREATE TABLE IF NOT EXISTS _teatree.modules (name VARCHAR PRIMARY KEY, digest VARCHAR NOT NULL, exports VARCHAR[] NOT NULL)`

type registerModuleArgs struct {
	Name    string      `json:"name"`
	Payload *payloadRef `json:"payload"`
}

// registerModuleSpec is register_module: validate a staged .wasm and bind
// it to a name of the model.
var registerModuleSpec = spec[registerModuleArgs]{
	Name:        "register_module",
	Summary:     "register a WebAssembly module (a staged .wasm) under a name, for the wasm function",
	Description: "Validates the staged module against ABI version 1 (docs/wasm.md: exports teatree_abi_version, teatree_alloc, teatree_process and a memory; imports only the wasi_snapshot_preview1 functions the sandbox grants), stores it content-addressed (its sha256) in the object store, records (model, name, digest, registered, exports) in Postgres and binds name to the digest for later wasm calls. Registering a name again rebinds it. teactl module register stages the file and submits this.",
	Schema: `"required": ["name", "payload"],
  "properties": {
    "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"},
    "payload": {"type": "object", "required": ["uri"], "additionalProperties": false, "properties": {"uri": {"type": "string", "minLength": 1, "maxLength": 1024}}}
  }`,
	Examples: []string{`{"name":"greatcircle","payload":{"uri":"staging/flights/0190f8a0-0000-7000-8000-000000000001/greatcircle.wasm"}}`},
	Check: func(a *registerModuleArgs) error {
		if err := checkModuleName(a.Name); err != nil {
			return err
		}
		if a.Payload == nil || a.Payload.URI == "" {
			return invalid("payload.uri is required: stage the .wasm file (teactl module register does)")
		}
		if a.Payload.Format != "" || a.Payload.Delimiter != "" {
			return invalid("payload of register_module takes only uri")
		}
		return nil
	},
	Apply: applyRegisterModule,
}

func applyRegisterModule(ctx context.Context, env Env, a *registerModuleArgs) (Result, error) {
	if env.WASM == nil || env.Modules == nil {
		return Result{}, invalid("WebAssembly modules are not enabled on this db-manager")
	}
	if env.Payload == nil {
		return Result{}, invalid("staged payloads are not available here")
	}
	local, err := env.Payload(ctx, a.Payload.URI)
	if err != nil {
		return Result{}, err
	}
	wasm, err := readModule(local)
	if err != nil {
		return Result{}, err
	}
	info, err := env.WASM.Validate(ctx, wasm)
	if err != nil {
		return Result{}, invalid("module %s is refused: %v", a.Name, err)
	}
	if err := env.Modules.Put(ctx, a.Name, info, wasm); err != nil {
		return Result{}, fmt.Errorf("store module %s: %w", a.Name, err)
	}
	if _, err := env.Conn.ExecContext(ctx, modulesTable); err != nil {
		return Result{}, dbError("create the modules table", err)
	}
	if _, err := env.Conn.ExecContext(ctx, `INSERT OR REPLACE INTO _teatree.modules VALUES (?, ?, ?)`, a.Name, info.Digest, info.Exports); err != nil {
		return Result{}, dbError("bind module "+a.Name, err)
	}
	return Result{Modules: []string{info.Digest}}, nil
}

func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxModuleBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxModuleBytes {
		return nil, invalid("the module is larger than %d bytes", MaxModuleBytes)
	}
	return b, nil
}

type wasmArgs struct {
	Module string          `json:"module"`
	Input  string          `json:"input"`
	Table  string          `json:"table"`
	Mode   string          `json:"mode,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	// Columns, when given, declare the output's schema: the module's
	// output must have exactly these columns, in this order, and each is
	// cast to its DuckDB type when written.
	Columns []wasmColumn `json:"columns,omitempty"`
}

// wasmColumn is a declared output column.
type wasmColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Modes of the wasm function.
const (
	wasmAppend  = "append"
	wasmReplace = "replace"
)

// wasmSpec is wasm: run a registered module over the result of a SELECT.
var wasmSpec = spec[wasmArgs]{
	Name:        "wasm",
	Summary:     "run a registered WebAssembly module over the Arrow batches of a SELECT and write its output to a table",
	Description: "Runs input (one SELECT over tables of schema main, the rules of refresh) inside the request's transaction, hands its result to the module registered as module (register_module) batch by batch as Arrow IPC streams with params (a JSON object), and writes the batches the module returns to main.<table>: mode append (the default) inserts them by column name, creating the table from the output's schema when missing; replace replaces the table. Every output batch must have the schema of the first. columns, when given, declare the output's schema: the module's output must have exactly these column names in this order, and each is cast to its DuckDB type when written. The module runs sandboxed (docs/wasm.md): no files, network, environment, clock or randomness but deterministic ones, memory and CPU time capped by the db-manager (defaults 256 MiB, 60 s); a trap, a timeout, a memory overrun or a malformed output fails the request alone. The input's order is the order the module sees: add ORDER BY for a result that does not depend on DuckDB's parallelism.",
	Schema: `"required": ["module", "input", "table"],
  "properties": {
    "module": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"},
    "input": {"type": "string", "minLength": 1, "maxLength": 1048576, "pattern": "^[^\\x00]*$"},
    "table": {"$ref": "#/$defs/table"},
    "mode": {"enum": ["append", "replace"], "default": "append"},
    "params": {"type": "object"},
    "columns": {
      "type": "array", "minItems": 1, "maxItems": 4096,
      "items": {
        "type": "object", "additionalProperties": false, "required": ["name", "type"],
        "properties": {
          "name": {"$ref": "#/$defs/column"},
          "type": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": "^[A-Za-z0-9_ (),\\[\\]]+$"}
        }
      }
    }
  }`,
	Examples: []string{
		`{"module":"greatcircle","input":"SELECT id, lat1, lon1, lat2, lon2 FROM legs ORDER BY id","table":"leg_distances","mode":"replace"}`,
		`{"module":"filter","input":"SELECT * FROM flights ORDER BY id","table":"late","params":{"column":"dep_delay","min":60}}`,
		`{"module":"greatcircle","input":"SELECT id, lat1, lon1, lat2, lon2 FROM legs ORDER BY id","table":"leg_km","columns":[{"name":"id","type":"BIGINT"},{"name":"lat1","type":"DOUBLE"},{"name":"lon1","type":"DOUBLE"},{"name":"lat2","type":"DOUBLE"},{"name":"lon2","type":"DOUBLE"},{"name":"distance_km","type":"DECIMAL(9,1)"}]}`,
	},
	Check: checkWasm,
	Apply: applyWasm,
}

func checkWasm(a *wasmArgs) error {
	if err := checkModuleName(a.Module); err != nil {
		return err
	}
	if err := checkTable(a.Table); err != nil {
		return err
	}
	switch a.Mode {
	case "", wasmAppend, wasmReplace:
	default:
		return invalid("mode %s is not append or replace", model.Quote(a.Mode))
	}
	if len(a.Params) > MaxParamsBytes {
		return invalid("params is %d bytes: at most %d are allowed", len(a.Params), MaxParamsBytes)
	}
	if len(a.Params) > 0 && bytes.TrimSpace(a.Params)[0] != '{' {
		return invalid("params is not a JSON object")
	}
	if len(a.Columns) > MaxColumns {
		return invalid("%d columns: at most %d are allowed", len(a.Columns), MaxColumns)
	}
	seen := map[string]string{}
	for _, c := range a.Columns {
		if err := checkColumn("column name", c.Name); err != nil {
			return err
		}
		if prev, dup := seen[strings.ToLower(c.Name)]; dup {
			return invalid("columns %q and %q are the same name to DuckDB (names are case-insensitive)", prev, c.Name)
		}
		seen[strings.ToLower(c.Name)] = c.Name
		if err := checkType(c.Name, c.Type); err != nil {
			return err
		}
	}
	node, err := selectNode(a.Input)
	if err != nil {
		return fmt.Errorf("input: %w", err)
	}
	if err := checkSelectTree(node); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	return nil
}

// moduleDigest returns the digest bound to name in the model's database.
// It looks the bindings table up first, so that a model without modules
// gets a clear error and its transaction no failed statement.
func moduleDigest(ctx context.Context, conn *sql.Conn, name string) (string, error) {
	notRegistered := invalid("module %s is not registered for this model: register it first (teactl module register MODEL %s FILE.wasm)", model.Quote(name), name)
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = '_teatree' AND table_name = 'modules'`).Scan(&n); err != nil {
		return "", dbError("look up the modules table", err)
	}
	if n == 0 {
		return "", notRegistered
	}
	var digest string
	err := conn.QueryRowContext(ctx, `SELECT digest FROM _teatree.modules WHERE name = ?`, name).Scan(&digest)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notRegistered
	}
	if err != nil {
		return "", dbError("look up module "+name, err)
	}
	return digest, nil
}

func applyWasm(ctx context.Context, env Env, a *wasmArgs) (Result, error) {
	if env.WASM == nil || env.Modules == nil {
		return Result{}, invalid("WebAssembly modules are not enabled on this db-manager")
	}
	if !duck.ArrowAvailable {
		return Result{}, duck.ErrNoArrow
	}
	digest, err := moduleDigest(ctx, env.Conn, a.Module)
	if err != nil {
		return Result{}, err
	}
	wasm, err := env.Modules.Get(ctx, digest)
	if err != nil {
		return Result{}, fmt.Errorf("module %s (%s): %w", a.Module, digest, err)
	}
	if err := env.WASM.Compile(ctx, digest, wasm, env.WASMLimits); err != nil {
		return Result{}, invalid("module %s: %v", a.Module, err)
	}
	params := a.Params
	if len(params) == 0 {
		params = json.RawMessage("{}")
	}
	out, err := runModule(ctx, env, a.Module, digest, wasm, a.Input, params)
	if err != nil {
		return Result{}, err
	}
	defer out.release()
	res, err := writeOutput(ctx, env, a, out)
	if err != nil {
		return Result{}, err
	}
	res.Modules = []string{digest}
	res.WASMBatches, res.WASMCopied = out.batches, out.copied
	return res, nil
}

// moduleOutput is the decoded output of a module, every batch of schema.
type moduleOutput struct {
	schema *arrow.Schema
	recs   []arrow.RecordBatch
	rows   int64
	// batches is the number of input batches; copied the bytes copied
	// into and out of the module's memory (udf.Instance.Copied) plus
	// those of encoding the input and decoding the output.
	batches int
	copied  int64
}

func (o *moduleOutput) release() {
	for _, r := range o.recs {
		r.Release()
	}
	o.recs = nil
}

// runModule runs input and hands each of its batches to a new instance
// of the module; the CPU clock (env.WASMLimits) starts after compiling.
func runModule(ctx context.Context, env Env, name, digest string, wasm []byte, input string, params []byte) (*moduleOutput, error) {
	mctx, cancel := udf.WithTimeout(ctx, env.WASMLimits)
	defer cancel()
	inst, err := env.WASM.Instantiate(mctx, digest, wasm, env.WASMLimits)
	if err != nil {
		return nil, moduleError(ctx, name, err)
	}
	defer inst.Close(ctx)
	mem := &boundedAllocator{mem: memory.NewGoAllocator(), limit: MaxWasmOutputBytes}
	out := &moduleOutput{}
	var buf bytes.Buffer
	qerr := duck.QueryArrow(ctx, env.Conn, input, func(rr array.RecordReader) error {
		for i := 0; rr.Next(); i++ {
			buf.Reset()
			if err := encodeBatch(&buf, rr.RecordBatch()); err != nil {
				return fmt.Errorf("encode input batch %d: %w", i, err)
			}
			b, err := inst.Process(mctx, buf.Bytes(), params)
			if err != nil {
				return moduleError(ctx, name, err)
			}
			out.batches++
			out.copied += int64(buf.Len() + len(b))
			if err := out.add(b, mem, i); err != nil {
				return invalid("module %s: output of batch %d: %v", name, i, err)
			}
		}
		return rr.Err()
	})
	if qerr != nil {
		out.release()
		if errors.Is(qerr, model.ErrInvalid) || errors.Is(qerr, udf.ErrModule) || ctx.Err() != nil {
			return nil, qerr
		}
		return nil, dbError("input", qerr)
	}
	out.copied += inst.Copied
	if out.schema == nil {
		return nil, invalid("module %s returned no output batch, not even an empty one: it declares no schema for table", name)
	}
	return out, nil
}

// moduleError marks an error of the module as the request's fault;
// the caller's cancellation stays as it is (the batch is retried).
func moduleError(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil || !errors.Is(err, udf.ErrModule) {
		return err
	}
	return invalid("module %s: %v", name, err)
}

// encodeBatch writes rec as one Arrow IPC stream (schema, batch, end).
func encodeBatch(w io.Writer, rec arrow.RecordBatch) error {
	iw := ipc.NewWriter(w, ipc.WithSchema(rec.Schema()))
	if err := iw.Write(rec); err != nil {
		return err
	}
	return iw.Close()
}

// add decodes one output stream of the module, with the checks of an
// Arrow payload (framing, sizes, offsets, dictionary indices: see
// convertArrow), and keeps its batches.
func (o *moduleOutput) add(b []byte, mem *boundedAllocator, batch int) (err error) {
	if len(b) == 0 {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(errArrowMemory); ok {
				err = fmt.Errorf("decoding the module's output needs more than %d bytes of memory (at most %d)", int64(e), int64(MaxWasmOutputBytes))
				return
			}
			err = fmt.Errorf("not a valid Arrow IPC stream: the decoder failed: %v", model.Excerpt(fmt.Sprint(r), model.MaxErrorText))
		}
	}()
	in := bytes.NewReader(b)
	if err := checkArrowFraming(in, 0, int64(len(b))); err != nil {
		return err
	}
	r, err := ipc.NewReader(in, ipc.WithAllocator(mem))
	if err != nil {
		return fmt.Errorf("not a valid Arrow IPC stream: %w", model.Shorten(err))
	}
	defer r.Release()
	s := r.Schema()
	if s == nil || s.NumFields() == 0 {
		return errors.New("the output's schema has no fields")
	}
	if o.schema == nil {
		o.schema = s
	} else if !o.schema.Equal(s) {
		return fmt.Errorf("the output's schema changed from %s to %s: every batch must have the first one's", model.Excerpt(o.schema.String(), model.MaxExcerpt*4), model.Excerpt(s.String(), model.MaxExcerpt*4))
	}
	for r.Next() {
		rec := r.RecordBatch()
		if n, longest := bufferBytes(rec); max(rec.NumRows(), longest) > arrowRowsPerByte*n+arrowRowsSlack {
			return fmt.Errorf("a record batch declares %d rows but holds %d bytes of data", rec.NumRows(), n)
		}
		if err := checkRecord(rec); err != nil {
			return err
		}
		rec.Retain()
		o.recs = append(o.recs, rec)
		o.rows += rec.NumRows()
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("not a valid Arrow IPC stream: %w", model.Shorten(err))
	}
	return nil
}

// wasmView is the name of the Arrow view of a module's output on the
// connection, while it is written.
const wasmView = "_teatree_wasm_output"

// writeOutput writes out to the table, by DuckDB's scan of the Arrow
// batches.
func writeOutput(ctx context.Context, env Env, a *wasmArgs, out *moduleOutput) (Result, error) {
	env.Tables.Forget()
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	rr, err := array.NewRecordReader(out.schema, out.recs)
	if err != nil {
		return Result{}, invalid("module %s: output: %v", a.Module, err)
	}
	defer rr.Release()
	release, err := duck.RegisterArrow(env.Conn, rr, wasmView)
	if err != nil {
		return Result{}, dbError("scan the module's output", err)
	}
	defer release()
	what := fmt.Sprintf("write the output of module %s (%s) to table %s", a.Module, model.Excerpt(out.schema.String(), model.MaxExcerpt*4), a.Table)
	sel, err := outputSelect(a, out.schema)
	if err != nil {
		return Result{}, fmt.Errorf("module %s: %w", a.Module, err)
	}
	switch {
	case a.Mode == wasmReplace || !exists:
		if _, err := env.Conn.ExecContext(ctx, "CREATE OR REPLACE TABLE "+qualified(a.Table)+" AS "+sel); err != nil {
			return Result{}, dbError(what, err)
		}
		return Result{Tables: []string{a.Table}, Rows: out.rows, Replaced: exists, Appended: !exists}, nil
	default:
		res, err := env.Conn.ExecContext(ctx, "INSERT INTO "+qualified(t.Name)+" BY NAME "+sel)
		if err != nil {
			return Result{}, dbError(what+" "+t.columnList(), err)
		}
		n, _ := res.RowsAffected()
		return Result{Tables: []string{t.Name}, Rows: n, Appended: true}, nil
	}
}

// outputSelect is the SELECT that reads the module's output: every column
// as it is, or with a.Columns each cast to its declared type after the
// output's names are checked against them.
func outputSelect(a *wasmArgs, s *arrow.Schema) (string, error) {
	if len(a.Columns) == 0 {
		return "SELECT * FROM " + wasmView, nil
	}
	names := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		names[i] = f.Name
	}
	declared := make([]string, len(a.Columns))
	for i, c := range a.Columns {
		declared[i] = c.Name
	}
	if len(names) != len(declared) || !slices.EqualFunc(names, declared, strings.EqualFold) {
		return "", invalid("the output's columns are %s, the args declare %s", model.Excerpt(strings.Join(names, ", "), model.MaxExcerpt*4), model.Excerpt(strings.Join(declared, ", "), model.MaxExcerpt*4))
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range a.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("CAST(" + duck.Ident(names[i]) + " AS " + c.Type + ") AS " + duck.Ident(c.Name))
	}
	b.WriteString(" FROM " + wasmView)
	return b.String(), nil
}
