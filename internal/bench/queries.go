package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/duck"
)

// queries are scenario 4's three queries over the flights table.
var queries = []struct{ id, name, sql string }{
	{"4a", "count with a filter", "SELECT count(*) FROM flights WHERE delay > 60 AND distance > 1000"},
	{"4b", "monthly aggregate", "SELECT date_trunc('month', date)::DATE AS month, origin, count(*) AS flights, avg(delay) AS avg_delay, " +
		"quantile_cont(delay, 0.95) AS p95_delay, avg(CASE WHEN delay > 15 THEN 1.0 ELSE 0.0 END) AS late_share, avg(distance) AS avg_distance " +
		"FROM flights GROUP BY ALL ORDER BY month, origin"},
	{"4c", "top 20 origins by average delay", "SELECT origin, avg(delay) AS avg_delay, count(*) AS flights FROM flights GROUP BY origin ORDER BY avg_delay DESC, origin LIMIT 20"},
}

// duckQuery runs q on db and reads every row, as teactl prints them.
func duckQuery(ctx context.Context, db *sql.DB, q string) (time.Duration, error) {
	t0 := time.Now()
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return 0, err
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// scenarioQueries is scenario 4: the queries through `teactl query` on the
// cached snapshot of the large model vs DuckDB on the same file in this
// process; teactl's fixed start-up cost (a `SELECT 1` through teactl) is
// measured apart and subtracted.
func (b *bench) scenarioQueries(ctx context.Context) ([]Result, error) {
	if err := b.ensureLarge(ctx); err != nil {
		return nil, err
	}
	m := b.large
	// The warm-up pulls the latest snapshot into teactl's cache.
	if _, _, err := b.teactl(ctx, "query", m, "SELECT 1", "--format", "csv"); err != nil {
		return nil, err
	}
	v, err := b.ctl.GetVersion(ctx, m, 0)
	if err != nil {
		return nil, err
	}
	// teactl keeps one cache directory per stack (named by its object store).
	found, _ := filepath.Glob(filepath.Join(b.dir, "cache", "snapshots", "*", m, fmt.Sprintf("%d-%s.duckdb", v.Version, v.SHA256)))
	if len(found) != 1 {
		return nil, fmt.Errorf("bench: %d cached snapshots of %s version %d in %s", len(found), m, v.Version, filepath.Join(b.dir, "cache"))
	}
	path := found[0]
	// The reader part (readerQueries) reads this same instance: DuckDB
	// shares one instance per file in a process, so its settings are the
	// reader's (threads, memory_limit) for every baseline.
	db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true, Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit})
	if err != nil {
		return nil, fmt.Errorf("bench: open the cached snapshot: %w", err)
	}
	defer db.Close()

	startup := Result{ID: "4s", Name: "teactl query start-up: SELECT 1 on the cached snapshot (process, connections, version lookup, open)", Unit: "ms", Target: "reported"}
	var st []float64
	for range b.cfg.Runs {
		d, _, err := b.teactl(ctx, "query", m, "SELECT 1", "--format", "csv")
		if err != nil {
			return nil, err
		}
		st = append(st, ms(d))
	}
	startup.Teatree = newStat(st)
	fixed := startup.Teatree.Median
	out := []Result{startup}
	for _, q := range queries {
		res := Result{ID: q.id, Name: "query, " + q.name + ": teactl query minus start-up", Unit: "ms",
			BaseName: "DuckDB in this process on the same file", Target: "ratio <= 1.2"}
		var tt, total, base []float64
		for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
			d, _, err := b.teactl(ctx, "query", m, q.sql, "--format", "csv")
			if err != nil {
				return out, err
			}
			bd, err := duckQuery(ctx, db, q.sql)
			if err != nil {
				return out, err
			}
			if r == 0 {
				continue
			}
			tt, total, base = append(tt, ms(d)-fixed), append(total, ms(d)), append(base, ms(bd))
		}
		res.Teatree, res.Baseline = newStat(tt), ptr(newStat(base))
		res.setRatio("(teactl ms − start-up ms) / DuckDB ms")
		res.Met = boolp(res.Ratio <= 1.2)
		res.Extra = map[string]any{"teactl_total_ms": newStat(total).Median}
		b.progress("%s: teactl %.0f ms (%.0f ms after start-up), DuckDB %.0f ms", q.id, newStat(total).Median, res.Teatree.Median, res.Baseline.Median)
		out = append(out, res)
	}
	rr, err := b.readerQueries(ctx, m, db)
	out = append(out, rr...)
	if err != nil {
		return out, err
	}
	// After the in-process reader stopped: 4m runs its own reader process.
	big, err := b.largeResult(ctx, m)
	return append(out, big), err
}
