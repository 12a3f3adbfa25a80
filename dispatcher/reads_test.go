package dispatcher_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// startDBManager runs model m's db-manager until the returned stop.
func startDBManager(t *testing.T, s *stacktest.Stack, m string) (stop func()) {
	t.Helper()
	mgr, err := dbmanager.New(dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("db-manager %s: %v", m, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// flightRows are rows of flights(carrier, delay).
func flightRows(rows ...string) []map[string]any {
	var out []map[string]any
	for _, r := range rows {
		var c string
		var d int
		fmt.Sscanf(strings.Replace(r, ":", " ", 1), "%s %d", &c, &d)
		out = append(out, map[string]any{"carrier": c, "delay": d})
	}
	return out
}

// expected is DuckDB's answer to the refresh's query over rows.
func expected(t *testing.T, query string, rows []map[string]any) []string {
	t.Helper()
	db, err := duck.Open(context.Background(), filepath.Join(t.TempDir(), "x.duckdb"), duck.Options{Threads: 1, MemoryLimit: "128MB"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE SCHEMA fl; CREATE TABLE fl.flights (carrier VARCHAR, delay INTEGER)"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if _, err := db.Exec("INSERT INTO fl.flights VALUES (?, ?)", r["carrier"], r["delay"]); err != nil {
			t.Fatal(err)
		}
	}
	return rowStrings(t, db, query)
}

// rowStrings runs query on db, each row as its values joined by "|".
func rowStrings(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// queryVersion pulls version n of model m and runs query on it.
func queryVersion(t *testing.T, s *stacktest.Stack, m string, n int64, query string) []string {
	t.Helper()
	ctx := context.Background()
	v, err := s.Ctl.GetVersion(ctx, m, n)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Client.Pull(ctx, v, filepath.Join(t.TempDir(), "v.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := duck.Open(ctx, p.Path, duck.Options{Threads: 1, MemoryLimit: "128MB", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return rowStrings(t, db, query)
}

const byCarrier = "SELECT carrier, count(*) AS n, sum(delay) AS delay FROM fl.flights GROUP BY ALL"

// TestReadsAcrossModels: a refresh of model summary reads flights'
// table at a pinned version and at "latest", which the dispatcher pins
// when it accepts the request; the result is DuckDB's over the same rows;
// the lineage lists the read (model, version, root); a request applied
// after flights changed reads the version pinned before; reads the
// server must refuse are rejected with one line.
func TestReadsAcrossModels(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "flights"})
	s.CreateModel(t, controldb.Model{ID: "summary"})
	s.CreateModel(t, controldb.Model{ID: "secret"})
	if _, err := s.Ctl.SetReaders(ctx, "flights", []string{"summary"}); err != nil {
		t.Fatal(err)
	}
	dctx, stopDispatcher := context.WithCancel(ctx)
	dispatched := make(chan error, 1)
	go func() {
		dispatched <- dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, noRunner{}).Run(dctx)
	}()
	t.Cleanup(func() {
		stopDispatcher()
		if err := <-dispatched; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	startDBManager(t, s, "flights")
	startDBManager(t, s, "secret")
	applied := func(r model.Request) model.Notification {
		t.Helper()
		n := s.SubmitWait(t, r, time.Minute)
		if n.Status != model.StatusApplied {
			t.Fatalf("request %s: %s %s", r.ID, n.Status, n.Error)
		}
		return n
	}
	applied(stacktest.Request("flights", "f-create", "create_table", map[string]any{"table": "flights",
		"columns": []map[string]any{{"name": "carrier", "type": "VARCHAR"}, {"name": "delay", "type": "INTEGER"}}}))
	a := flightRows("AA:10", "AA:20", "UA:5")
	vf1 := applied(stacktest.Request("flights", "f-a", "append", map[string]any{"table": "flights", "rows": a})).Version
	applied(stacktest.Request("secret", "s-create", "create_table", map[string]any{"table": "t", "columns": []map[string]any{{"name": "x", "type": "INTEGER"}}}))

	refresh := func(id string, reads map[string]any) model.Request {
		return stacktest.Request("summary", id, "refresh", map[string]any{"table": "by_carrier", "query": byCarrier, "reads": reads})
	}
	stopSummary := startDBManager(t, s, "summary")
	vs1 := applied(refresh("s-pinned", map[string]any{"fl": map[string]any{"model": "flights", "version": vf1}})).Version
	b := flightRows("DL:7", "AA:1")
	vf2 := applied(stacktest.Request("flights", "f-b", "append", map[string]any{"table": "flights", "rows": b})).Version
	stopSummary()

	// "latest", accepted now (flights is at vf2), applied after flights
	// changed again: it reads vf2.
	s.Submit(t, refresh("s-latest", map[string]any{"fl": map[string]any{"model": "flights"}}))
	var rec controldb.RequestRecord
	for deadline := time.Now().Add(time.Minute); ; {
		var err error
		rec, err = s.Ctl.GetRequest(ctx, "s-latest")
		if err == nil && rec.Reads != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dispatcher did not pin s-latest's reads: %+v, %v", rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := rec.Reads["fl"]; got.Model != "flights" || got.Version != vf2 || got.Root == "" {
		t.Fatalf("pinned %+v, want flights@%d with its root", rec.Reads, vf2)
	}
	vf3 := applied(stacktest.Request("flights", "f-c", "append", map[string]any{"table": "flights", "rows": flightRows("ZZ:100")})).Version
	startDBManager(t, s, "summary")
	vs2 := s.Outcomes(t, "summary", time.Minute, "s-latest")["s-latest"]
	if vs2.Status != model.StatusApplied {
		t.Fatalf("s-latest: %s %s", vs2.Status, vs2.Error)
	}

	// The results are DuckDB's over the rows of the versions read.
	for _, c := range []struct {
		version int64
		rows    []map[string]any
	}{{vs1, a}, {vs2.Version, slices.Concat(a, b)}} {
		got := queryVersion(t, s, "summary", c.version, "SELECT * FROM by_carrier ORDER BY carrier")
		want := expected(t, byCarrier+" ORDER BY carrier", c.rows)
		if !slices.Equal(got, want) {
			t.Errorf("summary@%d by_carrier = %v, want %v", c.version, got, want)
		}
	}
	// The lineage lists each read with its root.
	for _, c := range []struct{ summary, flights int64 }{{vs1, vf1}, {vs2.Version, vf2}} {
		v, err := s.Ctl.GetVersion(ctx, "summary", c.summary)
		if err != nil {
			t.Fatal(err)
		}
		fv, err := s.Ctl.GetVersion(ctx, "flights", c.flights)
		if err != nil {
			t.Fatal(err)
		}
		want := []model.ModelVersion{{Model: "flights", Version: c.flights, Root: fv.SHA256}}
		if v.Lineage == nil || !slices.Equal(v.Lineage.Reads, want) {
			t.Errorf("summary@%d lineage reads %+v, want %+v (flights is at %d)", c.summary, v.Lineage, want, vf3)
		}
	}

	// Refusals, each one line from the dispatcher.
	refused := map[string]string{
		"r-secret": "reads.fl: model secret does not let model summary read it: its operator grants that with 'teactl model readers secret summary'",
		"r-nosuch": "reads.fl: model nosuch does not exist",
		"r-old":    "reads.fl: model flights has no version 99",
		"r-self":   "reads.fl names model summary itself",
		"r-derive": "a derived table cannot read other models",
	}
	s.Submit(t,
		refresh("r-secret", map[string]any{"fl": map[string]any{"model": "secret"}}),
		refresh("r-nosuch", map[string]any{"fl": map[string]any{"model": "nosuch"}}),
		refresh("r-old", map[string]any{"fl": map[string]any{"model": "flights", "version": 99}}),
		refresh("r-self", map[string]any{"fl": map[string]any{"model": "summary"}}),
		stacktest.Request("summary", "r-derive", "derive", map[string]any{"table": "d", "query": byCarrier, "reads": map[string]any{"fl": map[string]any{"model": "flights"}}}),
	)
	got := s.Outcomes(t, "summary", time.Minute, "r-secret", "r-nosuch", "r-old", "r-self", "r-derive")
	for id, want := range refused {
		if n := got[id]; n.Status != model.StatusRejected || !strings.Contains(n.Error, want) || strings.Contains(n.Error, "\n") {
			t.Errorf("%s: %s %q, want rejected with %q", id, n.Status, n.Error, want)
		}
	}
}
