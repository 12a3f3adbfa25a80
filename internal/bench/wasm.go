package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/examples/delayclass/class"
)

// WasmModule is the module scenario 6 runs, in -bin: the example
// udf/examples/delayclass (make bench builds it).
const WasmModule = "delayclass.wasm"

// wasmInput is scenario 6's input query.
const wasmInput = "SELECT delay, distance FROM flights"

// scenarioWasm is scenario 6 (issue 18): a WASM map (the delayclass
// module) over the flights rows against the same computation in native
// Go over the same Arrow batches (the very code of the module, package
// class, run by this process over duck.QueryArrow's batches) and in SQL
// (a CASE expression), each writing a new table in one DuckDB of this
// process; plus the call of the module over a 1-row input. The WASM map
// is the wasm function as the db-manager applies it (functions.Lookup,
// one transaction), without the request stream around it.
func (b *bench) scenarioWasm(ctx context.Context) ([]Result, error) {
	wasm, err := os.ReadFile(filepath.Join(b.cfg.Bin, WasmModule))
	if err != nil {
		return nil, fmt.Errorf("bench: %w (make bench builds it: make %s/%s)", err, b.cfg.Bin, WasmModule)
	}
	file, err := b.flightsFile(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.dir, "wasm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := duck.Open(ctx, filepath.Join(dir, "wasm.duckdb"), duck.Options{Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit, ExternalAccess: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "CREATE TABLE flights AS SELECT * FROM read_parquet("+duck.Literal(file)+")"); err != nil {
		return nil, fmt.Errorf("bench: load the flights: %w", err)
	}
	var rows int64
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM flights").Scan(&rows); err != nil {
		return nil, err
	}
	// The compiled code is kept across runs (compiling a 14 MB module
	// takes tens of seconds), as a db-manager's --wasm-cache does.
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = dir
	}
	host, err := udf.NewHost(filepath.Join(cache, "teatree-wazero"))
	if err != nil {
		return nil, err
	}
	defer host.Close(context.WithoutCancel(ctx))
	staged := filepath.Join(dir, WasmModule)
	if err := os.WriteFile(staged, wasm, 0o644); err != nil {
		return nil, err
	}
	env := functions.Env{Conn: conn, WASM: host, Modules: &benchModules{},
		Payload: func(context.Context, string) (string, error) { return staged, nil }}
	t0 := time.Now()
	if _, err := applyTx(ctx, env, "register_module", map[string]any{"name": "delayclass", "payload": map[string]any{"uri": "staging/wasm/bench/" + WasmModule}}); err != nil {
		return nil, err
	}
	b.progress("6: module registered (validated and compiled, or loaded from the compilation cache) in %.1f s", time.Since(t0).Seconds())

	perSec := func(d time.Duration) float64 { return float64(rows) / d.Seconds() / 1e6 }
	var sqlRate, nativeRate, wasmRate, oneRow []float64
	var copied int64
	var batches int
	for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
		t0 := time.Now()
		if _, err := conn.ExecContext(ctx, "CREATE OR REPLACE TABLE c_sql AS SELECT delay, distance, "+class.SQL+" AS delay_class FROM flights"); err != nil {
			return nil, fmt.Errorf("bench: sql: %w", err)
		}
		ds := time.Since(t0)
		t0 = time.Now()
		if err := nativeMap(ctx, conn); err != nil {
			return nil, err
		}
		dn := time.Since(t0)
		t0 = time.Now()
		res, err := applyTx(ctx, env, "wasm", map[string]any{"module": "delayclass", "input": wasmInput, "table": "c_wasm", "mode": "replace"})
		if err != nil {
			return nil, err
		}
		dw := time.Since(t0)
		t0 = time.Now()
		if _, err := applyTx(ctx, env, "wasm", map[string]any{"module": "delayclass", "input": wasmInput + " LIMIT 1", "table": "c_one", "mode": "replace"}); err != nil {
			return nil, err
		}
		d1 := time.Since(t0)
		b.progress("6 run %d: sql %.2f s, native Go %.2f s, wasm %.2f s (%d batches, %.0f KB copied per batch), 1-row call %.0f ms", r, ds.Seconds(), dn.Seconds(), dw.Seconds(), res.WASMBatches, float64(res.WASMCopied)/float64(max(res.WASMBatches, 1))/1e3, ms(d1))
		if r > 0 {
			sqlRate, nativeRate, wasmRate, oneRow = append(sqlRate, perSec(ds)), append(nativeRate, perSec(dn)), append(wasmRate, perSec(dw)), append(oneRow, ms(d1))
			copied, batches = copied+res.WASMCopied, batches+res.WASMBatches
		}
	}
	// The three tables hold the same classes.
	var diff int64
	for _, t := range []string{"c_native", "c_wasm"} {
		q := fmt.Sprintf("SELECT count(*) FROM ((SELECT delay_class, count(*), sum(delay), sum(distance) FROM %s GROUP BY ALL) EXCEPT ALL (SELECT delay_class, count(*), sum(delay), sum(distance) FROM c_sql GROUP BY ALL))", t)
		if err := conn.QueryRowContext(ctx, q).Scan(&diff); err != nil {
			return nil, err
		}
		if diff != 0 {
			return nil, fmt.Errorf("bench: %s and c_sql differ in %d classes", t, diff)
		}
	}
	perBatch := float64(copied) / float64(max(batches, 1))
	w := Result{ID: "6w", Name: fmt.Sprintf("WASM map (delayclass) over the %d flights rows, wasm function in one transaction", rows),
		Unit: "M rows/s", Teatree: newStat(wasmRate), Baseline: ptr(newStat(nativeRate)), BaseName: "the same code in native Go over the same Arrow batches", Target: "within 3× of native Go"}
	w.setRatio("wasm rows/s / native Go rows/s")
	w.Met = boolp(w.Ratio >= 1.0/3)
	w.Extra = map[string]any{"bytes_copied_per_batch": perBatch, "batches": batches / b.cfg.Runs, "rows": rows, "sql_mrows_s": newStat(sqlRate).Median}
	s := Result{ID: "6s", Name: "the same WASM map against SQL (a CASE expression, CREATE TABLE AS)",
		Unit: "M rows/s", Teatree: newStat(wasmRate), Baseline: ptr(newStat(sqlRate)), BaseName: "SQL", Target: "reported"}
	s.setRatio("wasm rows/s / SQL rows/s")
	one := Result{ID: "6r", Name: "one call of the module over a 1-row input (instantiate, one batch, the table written)",
		Unit: "ms", Teatree: newStat(oneRow), Target: "reported"}
	return []Result{w, s, one}, nil
}

// nativeMap is the module's computation (class.Map) in this process over
// the batches of wasmInput, written to c_native by DuckDB's Arrow scan,
// the way the wasm function writes its output.
func nativeMap(ctx context.Context, conn *sql.Conn) error {
	var recs []arrow.RecordBatch
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	err := duck.QueryArrow(ctx, conn, wasmInput, func(rr array.RecordReader) error {
		for rr.Next() {
			out, err := class.Map(rr.RecordBatch(), json.RawMessage("{}"))
			if err != nil {
				return err
			}
			recs = append(recs, out...)
		}
		return rr.Err()
	})
	if err != nil {
		return fmt.Errorf("bench: native: %w", err)
	}
	rr, err := array.NewRecordReader(recs[0].Schema(), recs)
	if err != nil {
		return err
	}
	defer rr.Release()
	release, err := duck.RegisterArrow(conn, rr, "native_out")
	if err != nil {
		return err
	}
	defer release()
	if _, err := conn.ExecContext(ctx, "CREATE OR REPLACE TABLE c_native AS SELECT * FROM native_out"); err != nil {
		return fmt.Errorf("bench: native: %w", err)
	}
	return nil
}

// applyTx applies function fn with args on env.Conn in a transaction of
// its own, as the db-manager does (without the stream).
func applyTx(ctx context.Context, env functions.Env, fn string, args any) (functions.Result, error) {
	f, err := functions.Lookup(fn)
	if err != nil {
		return functions.Result{}, err
	}
	raw, _ := json.Marshal(args)
	call, err := f.Decode(raw)
	if err != nil {
		return functions.Result{}, err
	}
	if _, err := env.Conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return functions.Result{}, err
	}
	res, err := call.Apply(ctx, env)
	if err != nil {
		env.Conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return res, fmt.Errorf("bench: %s: %w", fn, err)
	}
	_, err = env.Conn.ExecContext(ctx, "COMMIT")
	return res, err
}

// benchModules is a functions.ModuleStore in memory.
type benchModules struct {
	mu      sync.Mutex
	modules map[string][]byte
}

func (s *benchModules) Put(_ context.Context, _ string, info udf.Info, wasm []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.modules == nil {
		s.modules = map[string][]byte{}
	}
	s.modules[info.Digest] = wasm
	return nil
}

func (s *benchModules) Get(_ context.Context, digest string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.modules[digest]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("module %s: %w", digest, model.ErrNotFound)
}
