package functions

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSourceThroughput measures append from a Postgres source of
// TEATREE_BENCH_SOURCE_ROWS rows (default 1 M; set
// TEATREE_BENCH_SOURCE=1 to run) against psql's COPY … TO STDOUT of the
// same rows into /dev/null, and reports the ratio (issue 19's target: at
// most 2×), the Go heap after the append, and an upsert of the same rows
// that updates every key.
func TestSourceThroughput(t *testing.T) {
	if os.Getenv("TEATREE_BENCH_SOURCE") == "" {
		t.Skip("set TEATREE_BENCH_SOURCE=1 to measure")
	}
	rows := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TEATREE_BENCH_SOURCE_ROWS")); err == nil && v > 0 {
		rows = v
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("no psql")
	}
	url := pgSource(t, `CREATE TABLE flights (id bigint, carrier text, origin varchar(3), dep timestamptz, day date, delay integer, fare numeric(8,2), cancelled boolean);
		INSERT INTO flights SELECT g, 'carrier ' || (g % 17), chr(65 + g % 26) || chr(65 + g % 7) || 'X', TIMESTAMPTZ '2026-01-01 00:00+00' + g * INTERVAL '1 minute',
			DATE '2026-01-01' + g % 365, (g % 300) - 60, (g % 100000) / 100.0, g % 50 = 0 FROM generate_series(1, `+strconv.Itoa(rows)+`) g;
		ANALYZE flights;`)
	best := func(f func() error) time.Duration {
		b := time.Duration(1 << 62)
		for range 3 {
			start := time.Now()
			if err := f(); err != nil {
				t.Fatal(err)
			}
			b = min(b, time.Since(start))
		}
		return b
	}
	copyTime := best(func() error {
		cmd := exec.Command(psql, url, "-X", "-q", "-c", "COPY (SELECT * FROM flights) TO STDOUT")
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer null.Close()
		cmd.Stdout = null
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("psql: %w: %s", err, stderr.String())
		}
		return nil
	})
	m := newModel(t)
	m.sources = map[string]string{"crm": url}
	run := 0
	appendTime := best(func() error {
		run++
		_, err := m.apply("append", `{"table":"f`+strconv.Itoa(run)+`","source":{"name":"crm","table":"flights"}}`)
		return err
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// upsert of the same rows into a table keyed by id: the first run
	// inserts them, the best is a run that updates every one.
	m.mustApply("create_table", `{"table":"u","columns":[{"name":"id","type":"BIGINT"},{"name":"carrier","type":"VARCHAR"},{"name":"origin","type":"VARCHAR"},{"name":"dep","type":"TIMESTAMPTZ"},{"name":"day","type":"DATE"},{"name":"delay","type":"INTEGER"},{"name":"fare","type":"DECIMAL(8,2)"},{"name":"cancelled","type":"BOOLEAN"}],"primary_key":["id"]}`)
	upsertTime := best(func() error {
		_, err := m.apply("upsert", `{"table":"u","source":{"name":"crm","table":"flights"}}`)
		return err
	})
	t.Logf("rows=%d psql COPY TO STDOUT: %s; append from source: %s; ratio %.2f (target <= 2); upsert from source (every key updated): %s; Go heap in use after the appends: %d MiB, total allocated %d MiB",
		rows, copyTime.Round(time.Millisecond), appendTime.Round(time.Millisecond), appendTime.Seconds()/copyTime.Seconds(), upsertTime.Round(time.Millisecond), ms.HeapInuse>>20, ms.TotalAlloc>>20)
	if got := m.rows("SELECT count(*) FROM f1"); got[0] != strconv.Itoa(rows) {
		t.Fatalf("f1 has %s rows", got[0])
	}
}
