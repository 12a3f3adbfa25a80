package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/teatree/teatree/duck"
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

// largeResultRows is the size of scenario 4m's result (the reader's
// default row limit).
const largeResultRows = 10_000_000

// largeResult is scenario 4m: a 10 M-row result (three columns, about
// 290 MB as Arrow) streamed through a reader process into a Parquet file
// by `teactl query -o FILE.parquet`, with the peak RSS of both processes:
// the reader holds the query's result as DuckDB materialises it (duckdb-go
// runs queries non-streaming; DuckDB keeps it in buffer-managed blocks
// under memory_limit) and a page at a time, teactl a page at a time.
func (b *bench) largeResult(ctx context.Context, m string) (Result, error) {
	res := Result{ID: "4m", Name: fmt.Sprintf("a %d-row result streamed through a reader process to a Parquet file (teactl query -o FILE.parquet)", largeResultRows),
		Unit: "ms", Target: "bounded memory (peak RSS reported)"}
	rd := exec.CommandContext(ctx, filepath.Join(b.cfg.Bin, "reader"), "--dir", filepath.Join(b.dir, "reader-4m"),
		"--duckdb-threads", strconv.Itoa(b.cfg.Threads), "--duckdb-memory-limit", reader.DefaultMemoryLimit)
	rd.Env = append(os.Environ(), b.common.Env()...)
	rd.Stderr = b.stderr
	if err := rd.Start(); err != nil {
		return res, fmt.Errorf("bench: start a reader: %w", err)
	}
	defer func() {
		rd.Process.Signal(syscall.SIGTERM)
		rd.Wait()
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		r, err := reader.Query(ctx, b.nc, m, "SELECT 1", reader.Options{Wait: 2 * time.Second})
		if err == nil {
			r.Close()
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("bench: the reader process does not answer: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A tenth of the rows first: memory that stays the same for ten times
	// the rows is bounded.
	small, err := b.streamResult(ctx, m, largeResultRows/10, rd.Process.Pid)
	if err != nil {
		return res, err
	}
	big, err := b.streamResult(ctx, m, largeResultRows, rd.Process.Pid)
	if err != nil {
		return res, err
	}
	res.Teatree = newStat([]float64{big.ms})
	res.Extra = map[string]any{"reader_peak_rss_mib": big.readerMiB, "teactl_peak_rss_mib": big.teactlMiB, "file_mib": big.fileMiB,
		"reader_memory_limit": reader.DefaultMemoryLimit, "tenth_reader_peak_rss_mib": small.readerMiB, "tenth_teactl_peak_rss_mib": small.teactlMiB}
	b.progress("4m: %.1f s, reader peak RSS %.0f MiB (%.0f MiB for a tenth of the rows), teactl %.0f MiB (%.0f MiB)",
		big.ms/1000, big.readerMiB, small.readerMiB, big.teactlMiB, small.teactlMiB)
	return res, nil
}

// streamed is one run of 4m.
type streamed struct {
	ms, readerMiB, teactlMiB, fileMiB float64
}

// streamResult writes a result of n rows through the reader process pid
// to a Parquet file with teactl and checks the file's rows.
func (b *bench) streamResult(ctx context.Context, m string, n int, pid int) (streamed, error) {
	out := filepath.Join(b.dir, fmt.Sprintf("result-%d.parquet", n))
	q := fmt.Sprintf("SELECT range AS id, range * 2 AS x, 'row-' || range::VARCHAR AS s FROM range(%d)", n)
	cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.Bin, "teactl"), "query", m, q, "-o", out)
	cmd.Env = append(append(os.Environ(), b.common.Env()...), "TEATREE_CACHE="+filepath.Join(b.dir, "cache"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return streamed{}, fmt.Errorf("bench: teactl query -o: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	d := time.Since(t0)
	readerRSS := kBField("/proc/"+strconv.Itoa(pid)+"/status", "VmHWM")
	teactlRSS := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		return streamed{}, err
	}
	defer db.Close()
	var rows int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM read_parquet("+duck.Literal(out)+")").Scan(&rows); err != nil {
		return streamed{}, err
	}
	if rows != n {
		return streamed{}, fmt.Errorf("bench: 4m: the file has %d rows, want %d", rows, n)
	}
	return streamed{ms: ms(d), readerMiB: float64(readerRSS) / (1 << 20), teactlMiB: float64(teactlRSS) / (1 << 20), fileMiB: fileMiB(out)}, nil
}
