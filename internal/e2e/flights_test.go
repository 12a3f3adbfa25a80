package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// flightsPath is the demo's real data, fetched by scripts/fetch-flights.sh
// (make data; make test fetches it first).
func flightsPath(t *testing.T) string {
	p, err := filepath.Abs("../../data/flights-3m.parquet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s is missing: run make data", p)
	}
	return p
}

// process is a child process that dies with the test.
func process(t *testing.T, name string, env []string, args ...string) *bytes.Buffer {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, logs.String())
		}
	})
	return &logs
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The compute job of the flights model, as the demo submits it.
const monthlySQL = `SELECT date_trunc('month', date)::DATE AS month, origin, count(*) AS flights, avg(delay) AS avg_delay, quantile_cont(delay, 0.95) AS p95_delay, avg(CASE WHEN delay > 15 THEN 1.0 ELSE 0.0 END) AS late_share, avg(distance) AS avg_distance FROM flights GROUP BY ALL ORDER BY month, origin`

const corrections = `{"date":"2001-01-01 06:00:00","delay":12,"distance":328,"origin":"SFO","destination":"LAX"}
{"date":"2001-01-02 09:15:00","delay":95,"distance":733,"origin":"ATL","destination":"ORD"}
`

// TestFlightsMainJob runs the main job of `make demo` against separately
// started processes: a nats-server process (JetStream, sync always), a
// private Postgres, MinIO, the dispatcher (which starts dbmanager
// processes) and teactl; then checks monthly_delays against DuckDB run
// directly on the source Parquet, every version's row counts against its
// manifest and its Parquet archive against its snapshot, and the deleted origin.
func TestFlightsMainJob(t *testing.T) {
	if testing.Short() {
		t.Skip("3 million rows through the whole stack")
	}
	data := flightsPath(t)
	ctx := context.Background()
	work := stackDir(t)

	natsPort := freePort(t)
	conf := filepath.Join(work, "nats.conf")
	os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:%d\njetstream { store_dir: %q, sync_interval: always }\n", natsPort, filepath.Join(work, "nats")), 0o644)
	process(t, "nats-server", cleanEnv(), "-c", conf)

	srv := miniotest.Shared(t)
	s3cfg := srv.Bucket(t)
	env := append(cleanEnv(), miniotest.Env()...)
	env = append(env,
		fmt.Sprintf("TEATREE_NATS_URL=nats://127.0.0.1:%d", natsPort),
		"TEATREE_POSTGRES_URL="+pgtest.NewDatabase(t),
		"TEATREE_STORE_URL="+miniotest.URL(s3cfg),
		"TEATREE_DATA_DIR="+filepath.Join(work, "models"),
		"TEATREE_DUCKDB_MEMORY_LIMIT=2GB",
		"TEATREE_IDLE_TIMEOUT=1m",
		"TEATREE_KEEP_STAGED=true", // teactl model verify replays the 3 M-row append
	)
	d := &devStack{env: env[len(cleanEnv()):]}
	// The dispatcher creates the streams and migrates; wait until teactl
	// can list models.
	process(t, "dispatcher", env)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, _, code := d.teactl(t, "model", "list"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dispatcher did not come up within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}

	d.must(t, "model", "create", "flights")
	d.must(t, "append", "flights", "flights", data, "--wait")
	refresh, _ := json.Marshal(map[string]string{"table": "monthly_delays", "query": monthlySQL})
	d.must(t, "submit", "flights", "refresh", "--args", string(refresh), "--wait")
	rows := filepath.Join(work, "corrections.ndjson")
	os.WriteFile(rows, []byte(corrections), 0o644)
	d.must(t, "submit", "flights", "append", "--args", `{"table":"flights"}`, "--rows", rows, "--wait")
	d.must(t, "submit", "flights", "delete", "--wait", "--args", `{"table":"flights","where":[{"column":"origin","op":"=","value":"ORD"}]}`)
	d.must(t, "submit", "flights", "refresh", "--args", string(refresh), "--wait")

	var vs []versionJSON
	if err := json.Unmarshal([]byte(d.must(t, "versions", "flights", "--json")), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 5 {
		t.Fatalf("%d versions, want 5", len(vs))
	}

	// Every version: the snapshot's row counts equal the manifest's, and
	// read_parquet over each table's data files equals the snapshot's table.
	store, err := objstore.NewS3(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	pulled := map[int64]string{}
	for _, v := range vs {
		rc, err := store.Get(ctx, snapshot.ManifestKey("flights", v.Version))
		if err != nil {
			t.Fatal(err)
		}
		var mf snapshot.Manifest
		err = json.NewDecoder(rc).Decode(&mf)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(work, fmt.Sprintf("v%d.duckdb", v.Version))
		d.must(t, "pull", "flights", "--version", fmt.Sprint(v.Version), "-o", path)
		pulled[v.Version] = path
		if mf.Version != v.Version || mf.Snapshot.SHA256 != v.SHA256 || len(mf.Tables) != len(v.Tables) {
			t.Fatalf("manifest of version %d: %+v", v.Version, mf)
		}
		if err := snapshot.CheckArchive(ctx, store, mf.Tables, path, work); err != nil {
			t.Errorf("version %d: %v", v.Version, err)
		}
	}
	if n := countRows(t, pulled[1], "flights"); n != 3_000_000 {
		t.Fatalf("version 1 holds %d flights", n)
	}
	if n := countRows(t, pulled[3], "flights WHERE origin = 'ORD'"); n == 0 {
		t.Fatal("version 3 has no ORD flights")
	}
	if n := countRows(t, pulled[5], "flights WHERE origin = 'ORD'"); n != 0 {
		t.Fatalf("latest version still has %d ORD flights", n)
	}

	// monthly_delays of the latest version equals DuckDB on the source.
	compareMonthly(t, pulled[5], data, rows)

	// The model is its request log: every version replayed from the
	// stream (the staged file kept) equals the published one.
	var rep struct {
		From     int64 `json:"from_version"`
		OK       bool  `json:"ok"`
		Versions []struct {
			Version int64  `json:"version"`
			Status  string `json:"status"`
		} `json:"versions"`
	}
	start := time.Now()
	out := d.must(t, "model", "verify", "flights", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.OK || rep.From != 1 || len(rep.Versions) != 5 {
		t.Fatalf("teactl model verify flights: %v\n%s", err, out)
	}
	t.Logf("teactl model verify flights: 5 versions from version 1 agree, in %s", time.Since(start).Round(100*time.Millisecond))
}

// compareMonthly computes the monthly aggregate with DuckDB directly on the
// source Parquet plus the corrections, without ORD, and compares it with
// monthly_delays in the snapshot: counts exactly, floating values to 1e-9
// relative.
func compareMonthly(t *testing.T, snap, source, corrections string) {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := fmt.Sprintf(`CREATE TABLE flights AS
		SELECT * FROM read_parquet('%s')
		UNION ALL SELECT date, delay, distance, origin, destination FROM read_json('%s', columns = {date: 'TIMESTAMP', delay: 'BIGINT', distance: 'BIGINT', origin: 'VARCHAR', destination: 'VARCHAR'})`, source, corrections)
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM flights WHERE origin = 'ORD'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`ATTACH '%s' AS snap (READ_ONLY)`, snap)); err != nil {
		t.Fatal(err)
	}
	type row struct {
		month                    time.Time
		origin                   string
		flights                  int64
		avg, p95, late, distance float64
	}
	read := func(query string) map[string]row {
		rs, err := db.Query(query)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		out := map[string]row{}
		for rs.Next() {
			var r row
			if err := rs.Scan(&r.month, &r.origin, &r.flights, &r.avg, &r.p95, &r.late, &r.distance); err != nil {
				t.Fatal(err)
			}
			out[r.month.Format("2006-01")+"/"+r.origin] = r
		}
		if err := rs.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := read(monthlySQL)
	got := read(`SELECT month, origin, flights, avg_delay, p95_delay, late_share, avg_distance FROM snap.monthly_delays`)
	if len(want) < 1000 || len(got) != len(want) {
		t.Fatalf("monthly_delays has %d rows, the independent computation %d", len(got), len(want))
	}
	near := func(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b)) }
	bad := 0
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.flights != w.flights || !near(g.avg, w.avg) || !near(g.p95, w.p95) || !near(g.late, w.late) || !near(g.distance, w.distance) {
			if bad++; bad <= 5 {
				t.Errorf("%s: got %+v, want %+v", k, g, w)
			}
		}
	}
	if _, ok := got["2001-01/ORD"]; ok || bad > 0 {
		t.Fatalf("%d of %d month/origin rows differ (ORD present: %t)", bad, len(want), ok)
	}
}
