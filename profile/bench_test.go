package profile

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// BenchmarkBuild profiles the second million rows of the flights
// (scripts/fetch-flights.sh) as the db-manager profiles a new data file:
// the 3 M rows in a checkpointed DuckDB file, 2 threads, a rowid range.
// Besides ns/op (wall time, which a shared machine inflates) it reports
// cpu-ns/op, the process's user and system CPU time per Build. The
// sub-benchmarks scan and copy are what Build is measured against: a
// count(*) of the same rows and their COPY to a Parquet file.
func BenchmarkBuild(b *testing.B) {
	path, err := filepath.Abs("../data/flights-3m.parquet")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		b.Skipf("no flights data (scripts/fetch-flights.sh): %v", err)
	}
	ctx := context.Background()
	dir := b.TempDir()
	db, err := duck.Open(ctx, filepath.Join(dir, "flights.duckdb"), duck.Options{Threads: 2, ExternalAccess: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"CREATE TABLE flights AS SELECT * FROM read_parquet(" + duck.Literal(path) + ")", "CHECKPOINT"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	tables, err := snapshot.DescribeCurrent(ctx, conn)
	if err != nil {
		b.Fatal(err)
	}
	cols := tables[0].Columns
	const where = "rowid >= 1000000 AND rowid < 2000000"
	run := func(b *testing.B, f func() error) {
		cpu := cpuTime()
		for b.Loop() {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	}
	b.Run("build", func(b *testing.B) {
		run(b, func() error {
			_, err := Build(ctx, conn, "flights", cols, where)
			return err
		})
	})
	b.Run("scan", func(b *testing.B) {
		run(b, func() error {
			var n int64
			return conn.QueryRowContext(ctx, "SELECT count(*) FROM flights WHERE "+where).Scan(&n)
		})
	})
	b.Run("copy", func(b *testing.B) {
		out := duck.Literal(filepath.Join(dir, "file.parquet"))
		run(b, func() error {
			_, err := conn.ExecContext(ctx, "COPY (SELECT * FROM flights WHERE "+where+") TO "+out+" (FORMAT parquet)")
			return err
		})
	})
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
