package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// largeModel is scenario 3L's synthetic model; its table is big.
const largeModel = "large-synthetic"

// largeSQL is the statement that builds big with rows rows through the
// sql function (a refresh may not read a table function such as range).
// A row takes about 70 bytes in the DuckDB file and does not compress: the
// row number as the key, two random UUIDs, a random UUID as text, a hash
// and a random double.
func largeSQL(rows int) string {
	return fmt.Sprintf("CREATE TABLE big AS SELECT range AS id, gen_random_uuid() AS a, gen_random_uuid() AS b, "+
		"gen_random_uuid()::VARCHAR AS s, hash(range) AS h, random() AS x FROM range(%d)", rows)
}

// largeRow is the row of the r-th one-row append to big (ids after the
// built ones).
func largeRow(rows, r int) map[string]any {
	u := fmt.Sprintf("00000000-0000-4000-8000-%012d", r)
	return map[string]any{"id": rows + r, "a": u, "b": u, "s": u, "h": r, "x": 0.5}
}

// updateSlice is the r-th 1 % of big's ids, [lo, hi).
func updateSlice(rows, r int) (lo, hi int) {
	return r * rows / 100, (r + 1) * rows / 100
}

// updateRequest sets s on the r-th 1 % of big's rows.
func updateRequest(rows, r int) model.Request {
	lo, hi := updateSlice(rows, r)
	args, _ := json.Marshal(map[string]any{"table": "big", "set": map[string]any{"s": "updated"},
		"where": []map[string]any{{"column": "id", "op": ">=", "value": lo}, {"column": "id", "op": "<", "value": hi}}})
	return model.Request{ID: fmt.Sprintf("large-update-%d", r), Model: largeModel, Function: "update", Args: args}
}

// pullResult is the JSON line `teactl pull --json` prints.
type pullResult struct {
	Version    int64 `json:"version"`
	Bytes      int64 `json:"bytes"`
	Fetched    int64 `json:"fetched_bytes"`
	Reused     int64 `json:"reused_bytes"`
	Downloaded int64 `json:"downloaded_bytes"`
}

// pull runs `teactl pull m -o out --json --version v` (reusing what is at
// out) and returns its time and its report.
func (b *bench) pull(ctx context.Context, m string, v int64, out string) (time.Duration, pullResult, error) {
	d, stdout, err := b.teactl(ctx, "pull", m, "-o", out, "--json", "--version", strconv.FormatInt(v, 10))
	var p pullResult
	if err != nil {
		return d, p, err
	}
	if err := json.Unmarshal(stdout, &p); err != nil {
		return d, p, fmt.Errorf("bench: teactl pull --json: %w: %q", err, stdout)
	}
	if p.Version != v {
		return d, p, fmt.Errorf("bench: teactl pull --version %d wrote version %d", v, p.Version)
	}
	return d, p, nil
}

// timedExec runs the statements on db, each a query and its arguments,
// and returns how long they took.
func timedExec(ctx context.Context, db *sql.DB, stmts ...[]any) (time.Duration, error) {
	t0 := time.Now()
	err := execAll(ctx, db, stmts...)
	return time.Since(t0), err
}

// scenarioLarge is scenario 3L: a synthetic model of -large-rows rows
// (about 2 GB by default) built once with the sql function; then one-row
// appends (3La) each followed by `teactl pull` of the new version over the
// previous one (3Lb), and updates of 1 % of the rows (3Lc), each with what
// its version uploaded and what the pull after it fetched. The baseline is
// DuckDB alone running the same statement and a CHECKPOINT on a copy of
// the same file, open in this process.
func (b *bench) scenarioLarge(ctx context.Context) ([]Result, error) {
	cfg, m := b.cfg, largeModel
	// Retention 2 keeps the previous version (whose Parquet files tell
	// which this version added) and lets retention delete the older
	// Parquet files, a whole table each.
	if err := b.createModelWith(ctx, controldb.Model{ID: m, AllowSQL: true, Retention: 2}); err != nil {
		return nil, err
	}
	args, _ := json.Marshal(map[string]string{"sql": largeSQL(cfg.LargeRows)})
	b.progress("3L: building %d rows with the sql function", cfg.LargeRows)
	build, n, err := b.submitWait(ctx, model.Request{ID: m + "-build", Model: m, Function: "sql", Args: args}, 30*time.Minute)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(filepath.Join(b.dir, "models", m, m+".duckdb"))
	if err != nil {
		return nil, fmt.Errorf("bench: the live file of %s: %w", m, err)
	}
	built, err := b.versionCost(ctx, m, n.Version)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.dir, "large")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "pulled.duckdb")
	firstPull, first, err := b.pull(ctx, m, n.Version, file)
	if err != nil {
		return nil, err
	}
	b.progress("3L: built in %.1f s: live file %.2f GiB, version %d uploaded %.0f MiB; first pull %.1f s, %.0f MiB fetched",
		sec(build), float64(st.Size())/(1<<30), n.Version, mib(built.Uploaded), sec(firstPull), mib(first.Fetched))
	basePath := filepath.Join(dir, "baseline.duckdb")
	if err := copyFile(file, basePath); err != nil {
		return nil, err
	}
	base, err := duck.Open(ctx, basePath, duck.Options{Threads: cfg.Threads, MemoryLimit: cfg.MemoryLimit})
	if err != nil {
		return nil, err
	}
	defer base.Close()
	common := map[string]any{"rows": cfg.LargeRows, "file_gib": float64(st.Size()) / (1 << 30), "build_s": sec(build),
		"build_uploaded_mib": mib(built.Uploaded), "first_pull_s": sec(firstPull)}

	app := Result{ID: "3La", Name: fmt.Sprintf("small change to a %.1f GiB model: one single-row append, submit→applied", float64(st.Size())/(1<<30)),
		Unit: "ms", BaseName: "DuckDB: the same insert and CHECKPOINT on a copy of the file", Target: "< 500 ms and < 2 MiB uploaded"}
	pl := Result{ID: "3Lb", Name: "teactl pull of that version over the previous one: downloaded (the compressed objects of the blocks it lacked)", Unit: "MiB", Target: "< 2 MiB"}
	var tt, bt, up, pq, fetched, reused, pullS, downloaded []float64
	cold := 0
	for r := 0; r <= cfg.Runs; r++ { // run 0 is the warm-up
		running := dbManagerPID(m) != 0
		d, c, err := b.change(ctx, changeRequest(m, "big", fmt.Sprintf("large-append-%d", r), largeRow(cfg.LargeRows, r)), 10*time.Minute)
		if err != nil {
			return nil, err
		}
		pd, p, err := b.pull(ctx, m, c.Version, file)
		if err != nil {
			return nil, err
		}
		row := largeRow(cfg.LargeRows, r)
		bd, err := timedExec(ctx, base,
			[]any{"INSERT INTO big (id, a, b, s, h, x) VALUES (?, ?::UUID, ?::UUID, ?, ?, ?)", row["id"], row["a"], row["b"], row["s"], row["h"], row["x"]},
			[]any{"CHECKPOINT"})
		if err != nil {
			return nil, fmt.Errorf("bench: 3L baseline: %w", err)
		}
		b.progress("3La run %d: teatree %.0f ms, %.2f MiB uploaded (%.2f MiB Parquet); pull %.2f s, %.2f MiB fetched (%.2f MiB downloaded); DuckDB %.0f ms",
			r, ms(d), mib(c.Uploaded), mib(c.Parquet), sec(pd), mib(p.Fetched), mib(p.Downloaded), ms(bd))
		if r == 0 {
			continue
		}
		if !running {
			cold++
		}
		tt, bt = append(tt, ms(d)), append(bt, ms(bd))
		up, pq = append(up, mib(c.Uploaded)), append(pq, mib(c.Parquet))
		fetched, reused, pullS = append(fetched, mib(p.Fetched)), append(reused, mib(p.Reused)), append(pullS, sec(pd))
		downloaded = append(downloaded, mib(p.Downloaded))
	}
	app.Teatree, app.Baseline = newStat(tt), ptr(newStat(bt))
	app.setRatio("teatree ms / DuckDB ms")
	app.Extra = map[string]any{"uploaded_mib": newStat(up).Median, "parquet_mib": newStat(pq).Median, "cold_starts": cold}
	for k, v := range common {
		app.Extra[k] = v
	}
	app.Met = boolp(app.Teatree.Median < 500 && newStat(up).Median < 2)
	pl.Teatree = newStat(downloaded)
	pl.Met = boolp(pl.Teatree.Median < 2)
	pl.Extra = map[string]any{"pull_s": newStat(pullS).Median, "reused_mib": newStat(reused).Median, "fetched_mib": newStat(fetched).Median}

	upd := Result{ID: "3Lc", Name: fmt.Sprintf("1 %% update (%d rows, one id range) of the same model, submit→applied", cfg.LargeRows/100),
		Unit: "ms", BaseName: "DuckDB: the same update and CHECKPOINT on a copy of the file", Target: "reported"}
	var ut, ubt, uup, upq, ufetched, upullS []float64
	for r := range cfg.LargeUpdate {
		d, c, err := b.change(ctx, updateRequest(cfg.LargeRows, r), 10*time.Minute)
		if err != nil {
			return []Result{app, pl}, err
		}
		pd, p, err := b.pull(ctx, m, c.Version, file)
		if err != nil {
			return []Result{app, pl}, err
		}
		lo, hi := updateSlice(cfg.LargeRows, r)
		bd, err := timedExec(ctx, base, []any{"UPDATE big SET s = ? WHERE id >= ? AND id < ?", "updated", lo, hi}, []any{"CHECKPOINT"})
		if err != nil {
			return []Result{app, pl}, fmt.Errorf("bench: 3L baseline: %w", err)
		}
		b.progress("3Lc run %d: teatree %.0f ms, %.2f MiB uploaded (%.2f MiB Parquet); pull %.2f s, %.2f MiB fetched; DuckDB %.0f ms",
			r+1, ms(d), mib(c.Uploaded), mib(c.Parquet), sec(pd), mib(p.Downloaded), ms(bd))
		ut, ubt = append(ut, ms(d)), append(ubt, ms(bd))
		uup, upq = append(uup, mib(c.Uploaded)), append(upq, mib(c.Parquet))
		ufetched, upullS = append(ufetched, mib(p.Downloaded)), append(upullS, sec(pd))
	}
	upd.Teatree, upd.Baseline = newStat(ut), ptr(newStat(ubt))
	upd.setRatio("teatree ms / DuckDB ms")
	upd.Extra = map[string]any{"uploaded_mib": newStat(uup).Median, "parquet_mib": newStat(upq).Median,
		"pull_fetched_mib": newStat(ufetched).Median, "pull_s": newStat(upullS).Median}
	return []Result{app, pl, upd}, nil
}
