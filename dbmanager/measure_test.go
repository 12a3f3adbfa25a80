package dbmanager

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// TestMeasureProfileOverhead measures what column profiles add to the
// archive of the 3 M-row flights table written whole (three data files):
// set TEATREE_PROFILE_MEASURE=1 and link data/ (scripts/fetch-flights.sh).
// The figures are logged (go test -v); docs/decisions.md quotes them.
func TestMeasureProfileOverhead(t *testing.T) {
	if os.Getenv("TEATREE_PROFILE_MEASURE") == "" {
		t.Skip("set TEATREE_PROFILE_MEASURE=1 to measure")
	}
	parquet, err := filepath.Abs("../data/flights-3m.parquet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(parquet); err != nil {
		t.Skipf("no flights data: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	db, err := duck.Open(ctx, filepath.Join(dir, "flights.duckdb"), duck.Options{Threads: 2, ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE flights AS SELECT * FROM read_parquet(" + duck.Literal(parquet) + ")"); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tables, err := snapshot.DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	// a second read transaction, for the runs with two (archiveReads)
	more, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer more.Close()
	for _, c := range []*sql.Conn{conn, more} {
		if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
			t.Fatal(err)
		}
	}
	for i, run := range []struct {
		on    bool
		reads int
	}{{false, 1}, {true, 1}, {false, 2}, {true, 2}, {false, 1}, {true, 1}, {false, 2}, {true, 2}} {
		on := run.on
		out := filepath.Join(dir, "v", string(rune('a'+i)))
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		a := archiver{conn: conn, dir: out, namespace: "flights", profiles: on, log: slog.Default()}
		if run.reads == 2 {
			a.more = []*sql.Conn{more}
		}
		ct := cutTable{Table: tables[0]}
		start, cpu := time.Now(), cpuTime()
		if err := a.whole(ctx, &ct); err != nil {
			t.Fatal(err)
		}
		var profiles int64
		for _, f := range ct.Data {
			if st, err := os.Stat(f.Profile); on && err == nil {
				profiles += st.Size()
			}
		}
		t.Logf("profiles %v, %d read transactions: %d files written in %v (CPU %v), profiles %d bytes", on, run.reads, len(ct.Data), time.Since(start), cpuTime()-cpu, profiles)
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
