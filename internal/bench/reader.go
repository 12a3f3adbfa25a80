package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/reader"
)

// readerQueries is the warm-reader part of scenario 4: a reader (in this
// process, the db-managers' DuckDB threads and memory_limit) serves model
// m; 4r is the round trip of SELECT 1 from a warm Go client, 4rs the same
// as a teactl process, 4ar–4cr the queries through the Go client (every
// Arrow batch received) against db, DuckDB in this process on the same
// snapshot with the same settings.
func (b *bench) readerQueries(ctx context.Context, m string, db *sql.DB) ([]Result, error) {
	cfg := reader.Config{Dir: filepath.Join(b.dir, "reader"), Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- app.RunReader(rctx, b.common, cfg, "", b.stderr, func() { close(ready) }) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-ready:
	case err := <-done:
		done <- err
		return nil, fmt.Errorf("bench: reader: %w", err)
	}
	query := func(q string) (time.Duration, error) {
		t0 := time.Now()
		res, err := reader.Query(ctx, b.nc, m, q, reader.Options{})
		if err != nil {
			return 0, err
		}
		defer res.Close()
		for res.Next() {
		}
		return time.Since(t0), res.Err()
	}
	if _, err := query("SELECT 1"); err != nil { // opens the latest version
		return nil, err
	}
	var out []Result
	rt := Result{ID: "4r", Name: "SELECT 1 through a warm reader, round trip from a warm Go client", Unit: "ms", Target: "< 20 ms"}
	proc := Result{ID: "4rs", Name: "SELECT 1 through a warm reader as a teactl process", Unit: "ms", Target: "< 60 ms"}
	var rts, procs []float64
	for range b.cfg.Runs {
		d, err := query("SELECT 1")
		if err != nil {
			return out, err
		}
		pd, _, err := b.teactl(ctx, "query", m, "SELECT 1", "--format", "csv")
		if err != nil {
			return out, err
		}
		rts, procs = append(rts, ms(d)), append(procs, ms(pd))
	}
	rt.Teatree, proc.Teatree = newStat(rts), newStat(procs)
	rt.Met, proc.Met = boolp(rt.Teatree.Median < 20), boolp(proc.Teatree.Median < 60)
	out = append(out, rt, proc)
	for _, q := range queries {
		res := Result{ID: q.id + "r", Name: "query, " + q.name + ": through a warm reader (Go client, Arrow pages)", Unit: "ms",
			BaseName: "DuckDB in this process on the same file, same threads and memory_limit", Target: "ratio <= 1.2"}
		var tt, base []float64
		for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
			d, err := query(q.sql)
			if err != nil {
				return out, err
			}
			bd, err := duckQuery(ctx, db, q.sql)
			if err != nil {
				return out, err
			}
			if r > 0 {
				tt, base = append(tt, ms(d)), append(base, ms(bd))
			}
		}
		res.Teatree, res.Baseline = newStat(tt), ptr(newStat(base))
		res.setRatio("reader ms / DuckDB ms")
		res.Met = boolp(res.Ratio <= 1.2)
		b.progress("%s: reader %.0f ms, DuckDB %.0f ms", res.ID, res.Teatree.Median, res.Baseline.Median)
		out = append(out, res)
	}
	gr, err := b.groupQueries(ctx)
	return append(out, gr...), err
}
