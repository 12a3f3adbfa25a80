package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// changeRow is the row of scenario 3's single-row append, in the flights
// schema (as the demo's corrections).
var changeRow = map[string]any{"date": "2001-01-01 06:00:00", "delay": 12, "distance": 328, "origin": "SFO", "destination": "LAX"}

// teactl runs bin/teactl with args against the stack and returns how long
// it took and its stdout.
func (b *bench) teactl(ctx context.Context, args ...string) (time.Duration, []byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.Bin, "teactl"), args...)
	cmd.Env = append(append(os.Environ(), b.common.Env()...), "TEATREE_CACHE="+filepath.Join(b.dir, "cache"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, nil, fmt.Errorf("bench: teactl %s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(errb.String()))
	}
	return d, out.Bytes(), nil
}

// flightsFile returns the flights file the scenarios use: -flights, or
// its first -flights-rows rows written once into the work directory.
func (b *bench) flightsFile(ctx context.Context) (string, error) {
	if b.flights != "" {
		return b.flights, nil
	}
	src, err := filepath.Abs(b.cfg.Flights)
	if err != nil {
		return "", err
	}
	if b.cfg.FlightsRows == 0 {
		b.flights = src
		return src, nil
	}
	dst := filepath.Join(b.dir, "input", "flights.parquet")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	db, err := duck.Open(ctx, "", duck.Options{Threads: b.cfg.Threads, ExternalAccess: true})
	if err != nil {
		return "", err
	}
	defer db.Close()
	q := fmt.Sprintf("COPY (SELECT * FROM read_parquet(%s) LIMIT %d) TO %s (FORMAT parquet)", duck.Literal(src), b.cfg.FlightsRows, duck.Literal(dst))
	if _, err := db.ExecContext(ctx, q); err != nil {
		return "", fmt.Errorf("bench: cut the flights file: %w", err)
	}
	b.flights = dst
	return dst, nil
}

// ingest creates model m and appends the flights file to its table
// flights with `teactl append --wait`; it returns the time and the
// db-manager's peak RSS in bytes.
func (b *bench) ingest(ctx context.Context, m string) (time.Duration, int64, error) {
	file, err := b.flightsFile(ctx)
	if err != nil {
		return 0, 0, err
	}
	if err := b.createModel(ctx, m); err != nil {
		return 0, 0, err
	}
	d, _, err := b.teactl(ctx, "append", m, "flights", file, "--wait")
	if err != nil {
		return d, 0, err
	}
	return d, kBField("/proc/"+strconv.Itoa(dbManagerPID(m))+"/status", "VmHWM"), nil
}

// duckIngest is the bulk-ingest baseline: DuckDB alone (same threads and
// memory_limit as a db-manager) creates the table from the file, exports
// it as Parquet, closes (checkpoints) the database and copies the file.
func (b *bench) duckIngest(ctx context.Context, dir string) (time.Duration, error) {
	file, err := b.flightsFile(ctx)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	path := filepath.Join(dir, "flights.duckdb")
	t0 := time.Now()
	db, err := duck.Open(ctx, path, duck.Options{Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit, ExternalAccess: true})
	if err != nil {
		return 0, err
	}
	for _, q := range []string{
		"CREATE TABLE flights AS SELECT * FROM read_parquet(" + duck.Literal(file) + ")",
		"COPY flights TO " + duck.Literal(filepath.Join(dir, "flights-0.parquet")) + " (FORMAT parquet)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			db.Close()
			return 0, fmt.Errorf("bench: baseline: %w", err)
		}
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	if err := copyFile(path, filepath.Join(dir, "copy-0.duckdb")); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// copyFile copies src to dst and syncs dst, as publishing a snapshot to a
// directory object store does.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// scenarioBulk is scenario 2: the flights through teactl append vs DuckDB
// alone (2a), and the low-memory run (2b).
func (b *bench) scenarioBulk(ctx context.Context) ([]Result, error) {
	out, err := b.scenarioBulkIngest(ctx)
	if err != nil || b.cfg.LowMemory == "" {
		return out, err
	}
	return append(out, b.scenarioLowMemory(ctx)), nil
}

// scenarioBulkIngest is 2a: the flights through teactl append vs DuckDB
// alone.
func (b *bench) scenarioBulkIngest(ctx context.Context) ([]Result, error) {
	file, err := b.flightsFile(ctx)
	if err != nil {
		return nil, err
	}
	res := Result{ID: "2a", Name: "bulk ingest: " + filepath.Base(b.cfg.Flights) + rowsNote(b.cfg.FlightsRows) + " via teactl append --wait",
		Unit: "s", BaseName: "DuckDB: CREATE TABLE AS read_parquet, COPY TO Parquet, copy of the file", Target: "ratio <= 1.3"}
	var tt, base, rss []float64
	for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
		m := fmt.Sprintf("bulk-%d", r)
		d, peak, err := b.ingest(ctx, m)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(b.dir, "baseline", fmt.Sprintf("bulk-%d", r))
		bd, err := b.duckIngest(ctx, dir)
		if err != nil {
			return nil, err
		}
		b.progress("2a run %d: teatree %.2f s (db-manager peak RSS %d MiB), DuckDB %.2f s", r, sec(d), peak>>20, sec(bd))
		if r == 0 {
			continue
		}
		if r == 1 {
			b.large, b.largeBase = m, filepath.Join(dir, "flights.duckdb")
		}
		tt, base, rss = append(tt, sec(d)), append(base, sec(bd)), append(rss, float64(peak>>20))
	}
	res.Teatree, res.Baseline = newStat(tt), ptr(newStat(base))
	res.setRatio("teatree s / DuckDB s")
	res.Met = boolp(res.Ratio <= 1.3)
	res.Extra = map[string]any{"peak_rss_mib": newStat(rss).Median, "memory_limit": b.cfg.MemoryLimit, "file_mib": fileMiB(file)}
	return []Result{res}, nil
}

// scenarioLowMemory is 2b: the bulk ingest with memory_limit -low-memory.
func (b *bench) scenarioLowMemory(ctx context.Context) Result {
	low := Result{ID: "2b", Name: "bulk ingest with memory_limit " + b.cfg.LowMemory + " (succeeds?)", Unit: "s", Target: "succeeds"}
	var lt, lrss []float64
	for r := range b.cfg.Runs {
		d, peak, err := b.ingest(ctx, fmt.Sprintf("%sbulk-%d", lowMemPrefix, r))
		if err != nil {
			low.Err, low.Met = err.Error(), boolp(false)
			return low
		}
		b.progress("2b run %d: teatree %.2f s with memory_limit %s, db-manager peak RSS %d MiB", r+1, sec(d), b.cfg.LowMemory, peak>>20)
		lt, lrss = append(lt, sec(d)), append(lrss, float64(peak>>20))
	}
	low.Teatree, low.Met = newStat(lt), boolp(true)
	low.Extra = map[string]any{"peak_rss_mib": newStat(lrss).Median}
	return low
}

// scenarioProfiles is 2p: the bulk ingest of 2a with column profiles on
// (the default) and off (TEATREE_PROFILES=off, models named noprof-*),
// alternately: what profiling the three data files of the flights costs.
func (b *bench) scenarioProfiles(ctx context.Context) ([]Result, error) {
	res := Result{ID: "2p", Name: "bulk ingest: " + filepath.Base(b.cfg.Flights) + rowsNote(b.cfg.FlightsRows) + " via teactl append --wait, column profiles on",
		Unit: "s", BaseName: "the same with column profiles off (TEATREE_PROFILES=off)", Target: "overhead <= 15 %"}
	var on, off []float64
	for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
		d, _, err := b.ingest(ctx, fmt.Sprintf("bulk-prof-%d", r))
		if err != nil {
			return nil, err
		}
		od, _, err := b.ingest(ctx, fmt.Sprintf("%sbulk-%d", noProfilesPrefix, r))
		if err != nil {
			return nil, err
		}
		b.progress("2p run %d: profiles on %.2f s, off %.2f s", r, sec(d), sec(od))
		if r > 0 {
			on, off = append(on, sec(d)), append(off, sec(od))
		}
	}
	res.Teatree, res.Baseline = newStat(on), ptr(newStat(off))
	res.setRatio("profiles on s / profiles off s")
	res.Met = boolp(res.Ratio <= 1.15)
	res.Extra = map[string]any{"overhead_pct": 100 * (res.Ratio - 1)}
	return []Result{res}, nil
}

func rowsNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (first %d rows)", n)
}

func fileMiB(path string) float64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}

// ensureLarge makes sure a model and a baseline file hold the flights
// (scenario 2 leaves them; scenarios 3 and 4 run without it too).
func (b *bench) ensureLarge(ctx context.Context) error {
	if b.large != "" {
		return nil
	}
	if _, _, err := b.ingest(ctx, "large"); err != nil {
		return err
	}
	dir := filepath.Join(b.dir, "baseline", "large")
	if _, err := b.duckIngest(ctx, dir); err != nil {
		return err
	}
	b.large, b.largeBase = "large", filepath.Join(dir, "flights.duckdb")
	return nil
}

// changeRequest is a single-row append to table of model m.
func changeRequest(m, table, id string, row map[string]any) model.Request {
	args, _ := json.Marshal(map[string]any{"table": table, "rows": []map[string]any{row}})
	return model.Request{ID: id, Model: m, Function: "append", Args: args}
}

// duckChange is the small-change baseline: the same row inserted with
// DuckDB alone, then the version published the naive way: checkpoint,
// re-export the whole table as Parquet and copy the whole file.
func (b *bench) duckChange(ctx context.Context, run int) (time.Duration, error) {
	dir := filepath.Dir(b.largeBase)
	t0 := time.Now()
	db, err := duck.Open(ctx, b.largeBase, duck.Options{Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit, ExternalAccess: true})
	if err != nil {
		return 0, err
	}
	r := changeRow
	if err := execAll(ctx, db,
		[]any{"INSERT INTO flights (date, delay, distance, origin, destination) VALUES (?, ?, ?, ?, ?)", r["date"], r["delay"], r["distance"], r["origin"], r["destination"]},
		[]any{"CHECKPOINT"},
		[]any{fmt.Sprintf("COPY flights TO %s (FORMAT parquet)", duck.Literal(filepath.Join(dir, fmt.Sprintf("change-%d.parquet", run))))},
	); err != nil {
		db.Close()
		return 0, fmt.Errorf("bench: change baseline: %w", err)
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	if err := copyFile(b.largeBase, filepath.Join(dir, fmt.Sprintf("change-%d.duckdb", run))); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// execAll runs statements, each a query followed by its arguments.
func execAll(ctx context.Context, db *sql.DB, stmts ...[]any) error {
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s[0].(string), s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// tinyModel is scenario 3's 10-row model, the reference for the cost of
// an append that does not depend on the table's size.
const tinyModel = "change-10-rows"

// setupTinyModel creates the 10-row model: table t (as the small-request
// models) and one append of 10 rows.
func (b *bench) setupTinyModel(ctx context.Context) error {
	if err := b.setupSmallModels(ctx, []string{tinyModel}); err != nil {
		return err
	}
	rows := make([]map[string]any, 10)
	for i := range rows {
		rows[i] = map[string]any{"id": i, "v": "teabench row"}
	}
	args, _ := json.Marshal(map[string]any{"table": "t", "rows": rows})
	_, _, err := b.submitWait(ctx, model.Request{ID: tinyModel + "-rows", Model: tinyModel, Function: "append", Args: args}, time.Minute)
	return err
}

// change submits r, waits until it is applied and reads what publishing
// its version uploaded.
func (b *bench) change(ctx context.Context, r model.Request, timeout time.Duration) (time.Duration, cost, error) {
	d, n, err := b.submitWait(ctx, r, timeout)
	if err != nil {
		return d, cost{}, err
	}
	c, err := b.versionCost(ctx, r.Model, n.Version)
	return d, c, err
}

// scenarioChange is scenario 3: one single-row append to the large model,
// submit to applied, vs the naive re-export (3); and the same append to a
// 10-row model, whose ratio shows whether the time depends on the table's
// size (3b). Both report what their versions uploaded.
func (b *bench) scenarioChange(ctx context.Context) ([]Result, error) {
	if err := b.ensureLarge(ctx); err != nil {
		return nil, err
	}
	if err := b.setupTinyModel(ctx); err != nil {
		return nil, err
	}
	res := Result{ID: "3", Name: "small change: one single-row append to the " + b.large + " model, submit→applied",
		Unit: "ms", BaseName: "DuckDB: insert, checkpoint, re-export the table, copy the file", Target: "< 150 ms"}
	var tt, base, small, up, parquet, smallUp []float64
	for r := 0; r <= b.cfg.Changes; r++ { // run 0 is the warm-up
		// A row of its own each run: the same row twice would be the same
		// content-addressed data file, not counted as written again.
		row := maps.Clone(changeRow)
		row["distance"] = 328 + r
		d, c, err := b.change(ctx, changeRequest(b.large, "flights", fmt.Sprintf("change-%d", r), row), 5*time.Minute)
		if err != nil {
			return nil, err
		}
		bd, err := b.duckChange(ctx, r)
		if err != nil {
			return nil, err
		}
		sd, sc, err := b.change(ctx, changeRequest(tinyModel, "t", fmt.Sprintf("small-change-%d", r), map[string]any{"id": -1 - r, "v": "change"}), time.Minute)
		if err != nil {
			return nil, err
		}
		b.progress("3 run %d: teatree %.0f ms, %.2f MiB uploaded (10-row model %.0f ms, %.0f KiB), DuckDB re-export %.0f ms",
			r, ms(d), mib(c.Uploaded), ms(sd), float64(sc.Uploaded)/(1<<10), ms(bd))
		if r == 0 {
			continue
		}
		tt, base, small = append(tt, ms(d)), append(base, ms(bd)), append(small, ms(sd))
		up, parquet, smallUp = append(up, mib(c.Uploaded)), append(parquet, mib(c.Parquet)), append(smallUp, mib(sc.Uploaded))
	}
	res.Teatree, res.Baseline = newStat(tt), ptr(newStat(base))
	res.setRatio("teatree ms / re-export ms")
	res.Met = boolp(res.Teatree.Median < 150)
	res.Extra = map[string]any{"uploaded_mib": newStat(up).Median, "parquet_mib": newStat(parquet).Median}
	sizes := Result{ID: "3b", Name: "small change: the same append, " + b.large + " model vs a 10-row model, submit→applied",
		Unit: "ms", Teatree: res.Teatree, Baseline: ptr(newStat(small)), BaseName: "the same append to a 10-row model", Target: "ratio <= 1.5"}
	sizes.setRatio("large model ms / 10-row model ms")
	sizes.Met = boolp(sizes.Ratio <= 1.5)
	sizes.Extra = map[string]any{"uploaded_mib": res.Extra["uploaded_mib"], "small_uploaded_mib": newStat(smallUp).Median}
	total, err := b.tableBytes(ctx, b.large, "flights")
	if err != nil {
		return nil, err
	}
	kib := make([]float64, len(parquet))
	for i, p := range parquet {
		kib[i] = p * 1024
	}
	written := Result{ID: "3p", Name: "small change: Parquet written for the one-row append to the " + b.large + " model",
		Unit: "KiB", Teatree: newStat(kib), Baseline: ptr(newStat([]float64{mib(total) * 1024})), BaseName: "the table's data files in all (a whole re-export)", Target: "< 64 KiB"}
	written.setRatio("written KiB / table KiB")
	written.Met = boolp(written.Teatree.Median < 64)
	update, err := b.scenarioUpdate(ctx, total)
	if err != nil {
		return nil, err
	}
	return []Result{res, sizes, written, update}, nil
}

// tableBytes is the size of the data files of table in model m's latest
// version.
func (b *bench) tableBytes(ctx context.Context, m, table string) (int64, error) {
	v, err := b.ctl.GetVersion(ctx, m, 0)
	if err != nil {
		return 0, err
	}
	for _, t := range v.Tables {
		if t.Name == table {
			return t.Bytes, nil
		}
	}
	return 0, fmt.Errorf("bench: %s version %d has no table %s", m, v.Version, table)
}

// scenarioUpdate is 3u: an update of 1 % of the flights (the rows of a
// range of dates, a different range each run), submit→applied, and the
// Parquet its version wrote against the table's data files in all
// (total bytes): copy-on-write at file granularity rewrites only the files
// holding those rows.
func (b *bench) scenarioUpdate(ctx context.Context, total int64) (Result, error) {
	res := Result{ID: "3u", Name: "update of 1 % of the " + b.large + " model's flights (a range of dates): Parquet written",
		Unit: "MiB", Baseline: ptr(newStat([]float64{mib(total)})), BaseName: "the table's data files in all (a whole re-export)", Target: "only the files holding the rows"}
	db, err := duck.Open(ctx, b.largeBase, duck.Options{ReadOnly: true, Threads: b.cfg.Threads})
	if err != nil {
		return res, err
	}
	defer db.Close()
	var written, took []float64
	for r := 0; r <= b.cfg.Changes; r++ { // run 0 is the warm-up
		// The dates at 1 % steps of the table in date order, from its middle.
		var lo, hi string
		if err := db.QueryRowContext(ctx, `SELECT quantile_disc(date, ?)::VARCHAR, quantile_disc(date, ?)::VARCHAR FROM flights`,
			0.40+0.02*float64(r), 0.41+0.02*float64(r)).Scan(&lo, &hi); err != nil {
			return res, fmt.Errorf("bench: date range: %w", err)
		}
		args, _ := json.Marshal(map[string]any{"table": "flights", "set": map[string]any{"delay": 1000 + r},
			"where": []map[string]any{{"column": "date", "op": ">=", "value": lo}, {"column": "date", "op": "<", "value": hi}}})
		d, c, err := b.change(ctx, model.Request{ID: fmt.Sprintf("update-%d", r), Model: b.large, Function: "update", Args: args}, 5*time.Minute)
		if err != nil {
			return res, err
		}
		b.progress("3u run %d: %s to %s, %.0f ms, %.2f MiB Parquet written of %.2f MiB", r, lo, hi, ms(d), mib(c.Parquet), mib(total))
		if r > 0 {
			written, took = append(written, mib(c.Parquet)), append(took, ms(d))
		}
	}
	res.Teatree = newStat(written)
	res.setRatio("written MiB / table MiB")
	res.Met = boolp(res.Ratio < 1)
	res.Extra = map[string]any{"submit_applied_ms": newStat(took).Median}
	return res, nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
