package dbmanager

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
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
	for i, on := range []bool{false, true, false, true} {
		out := filepath.Join(dir, "v", string(rune('a'+i)))
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		a := archiver{conn: conn, dir: out, namespace: "flights", profiles: on, log: slog.Default()}
		ct := cutTable{Table: tables[0]}
		start := time.Now()
		if err := a.whole(ctx, &ct); err != nil {
			t.Fatal(err)
		}
		var profiles int64
		for _, f := range ct.Data {
			if st, err := os.Stat(f.Profile); on && err == nil {
				profiles += st.Size()
			}
		}
		t.Logf("profiles %v: %d files written in %v, profiles %d bytes", on, len(ct.Data), time.Since(start), profiles)
	}
}
