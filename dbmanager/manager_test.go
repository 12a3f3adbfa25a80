package dbmanager_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

const wait = 60 * time.Second

// handle is a db-manager running in a goroutine.
type handle struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  atomic.Bool
}

// wait waits for Run to return and hands back its error.
func (h *handle) wait(t *testing.T) error {
	t.Helper()
	if h.ended.Load() {
		return h.err
	}
	select {
	case h.err = <-h.done:
		h.ended.Store(true)
		return h.err
	case <-time.After(wait):
		t.Fatal("db-manager did not stop")
		return nil
	}
}

// stop cancels the db-manager and waits for it.
func (h *handle) stop(t *testing.T) error {
	h.cancel()
	return h.wait(t)
}

// run starts a db-manager for m; it is stopped by t.Cleanup.
func run(t *testing.T, s *stacktest.Stack, m string, tweak func(*dbmanager.Manager)) *handle {
	t.Helper()
	return runConfig(t, s, testConfig(s, m), tweak)
}

// testConfig is the Config of run's db-managers.
func testConfig(s *stacktest.Stack, m string) dbmanager.Config {
	return dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
}

// runConfig is run with cfg.
func runConfig(t *testing.T, s *stacktest.Stack, cfg dbmanager.Config, tweak func(*dbmanager.Manager)) *handle {
	t.Helper()
	mgr, err := dbmanager.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(mgr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &handle{cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- mgr.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func createTable(m, id string) model.Request {
	return stacktest.Request(m, id, "create_table", map[string]any{
		"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}, "primary_key": []string{"n"}})
}

func appendRow(m, id string, n int) model.Request {
	return stacktest.Request(m, id, "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": n, "v": fmt.Sprint("row ", n)}}})
}

// latest opens the latest published snapshot read-only, as an analyst
// would, and returns it with its version.
func latest(t *testing.T, s *stacktest.Stack, m string) (*sql.DB, controldb.Version) {
	t.Helper()
	ctx := context.Background()
	v, err := s.Ctl.GetVersion(ctx, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), m+".duckdb")
	if err := versionFile(ctx, s, v, path); err != nil {
		t.Fatal(err)
	}
	db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, v
}

func TestAppliesInOrderAndPublishes(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "orders"}).ID
	const n = 300
	reqs := []model.Request{createTable(m, "create")}
	for i := range n {
		reqs = append(reqs, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	// Half before the db-manager starts (one big batch), half while it runs.
	s.Submit(t, reqs[:n/2]...)
	run(t, s, m, nil)
	s.Submit(t, reqs[n/2:]...)
	ids := []string{"create"}
	ids = append(ids, stacktest.IDs("a", n)...)
	got := s.Outcomes(t, m, wait, ids...)
	last := int64(0)
	for _, id := range ids {
		nt := got[id]
		if nt.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", id, nt.Status, nt.Error)
		}
		if nt.Version < last {
			t.Errorf("%s in version %d after a later-submitted request in version %d", id, nt.Version, last)
		}
		last = nt.Version
	}
	db, v := latest(t, s, m)
	if v.Version != last {
		t.Errorf("latest version %d, last notification names %d", v.Version, last)
	}
	// Rows were applied in submission order: insertion order is n order.
	rows, err := db.Query("SELECT n FROM t ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var got int
		rows.Scan(&got)
		if got != i {
			t.Fatalf("row %d holds n=%d: applied out of order", i, got)
		}
		i++
	}
	if i != n {
		t.Errorf("snapshot holds %d rows, want %d", i, n)
	}
	if len(v.Tables) != 1 || v.Tables[0].Rows != n {
		t.Errorf("content index %+v, want table t with %d rows", v.Tables, n)
	}
	if all := s.AllNotifications(t, m); len(all) != n+1 {
		t.Errorf("%d notifications for %d requests", len(all), n+1)
	}
}

func TestFailureIsolatedInBatch(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "iso"}).ID
	bad := stacktest.Request(m, "bad", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": "not a number"}}})
	dupKey := appendRow(m, "dupkey", 1) // violates the primary key
	s.Submit(t, createTable(m, "create"), appendRow(m, "ok1", 1), bad, appendRow(m, "ok2", 2), dupKey, appendRow(m, "ok3", 3))
	run(t, s, m, nil) // all six arrive in one batch
	got := s.Outcomes(t, m, wait, "create", "ok1", "bad", "ok2", "dupkey", "ok3")
	for id, want := range map[string]model.Status{"create": model.StatusApplied, "ok1": model.StatusApplied, "bad": model.StatusFailed, "ok2": model.StatusApplied, "dupkey": model.StatusFailed, "ok3": model.StatusApplied} {
		if got[id].Status != want {
			t.Errorf("%s: %s (%s), want %s", id, got[id].Status, got[id].Error, want)
		}
	}
	if got["bad"].Error == "" || got["dupkey"].Error == "" {
		t.Errorf("failed requests carry no error: %+v %+v", got["bad"], got["dupkey"])
	}
	db, _ := latest(t, s, m)
	var count, sum int
	db.QueryRow("SELECT count(*), sum(n) FROM t").Scan(&count, &sum)
	if count != 3 || sum != 6 {
		t.Errorf("table holds %d rows summing to %d, want 3 rows (1, 2, 3)", count, sum)
	}
	rec, err := s.Ctl.GetRequest(context.Background(), "bad")
	if err != nil || rec.Status != model.StatusFailed {
		t.Errorf("request_log of bad = %+v, %v", rec, err)
	}
}

func TestExactlyOnceAcrossCrashBeforeAck(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "crash"}).ID
	s.Submit(t, createTable(m, "create"))
	for i := range 50 {
		s.Submit(t, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	var commits atomic.Int32
	h := run(t, s, m, func(mgr *dbmanager.Manager) {
		mgr.SetCrashAfterCommit(func() bool { return commits.Add(1) == 1 })
	})
	// The first batch commits, then the db-manager "dies" before its ack.
	err := h.wait(t)
	if !errors.Is(err, dbmanager.ErrFatal) {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	// The unacknowledged messages are pending again on the old consumer.
	for i := 50; i < 80; i++ {
		s.Submit(t, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	run(t, s, m, nil)
	ids := append([]string{"create"}, stacktest.IDs("a", 80)...)
	s.Outcomes(t, m, wait, ids...)
	db, _ := latest(t, s, m)
	var count, distinct int
	db.QueryRow("SELECT count(*), count(DISTINCT n) FROM t").Scan(&count, &distinct)
	if count != 80 || distinct != 80 {
		t.Errorf("table holds %d rows (%d distinct), want each of 80 once", count, distinct)
	}
	seen := map[string]int{}
	for _, n := range s.AllNotifications(t, m) {
		seen[n.RequestID+"/"+string(n.Status)]++
	}
	for k, c := range seen {
		if c > 1 {
			t.Errorf("%s notified %d times", k, c)
		}
	}
}

func TestDuplicateRequestIDAppliedOnce(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "dup"}).ID
	s.Submit(t, createTable(m, "create"), appendRow(m, "same", 7))
	// A retry inside the dedupe window is dropped by JetStream.
	s.Submit(t, appendRow(m, "same", 7))
	// A retry after the window (a different Nats-Msg-Id here) reaches the
	// stream; the db-manager must skip it.
	data, _ := json.Marshal(appendRow(m, "same", 7))
	if _, err := s.JS.PublishMsg(context.Background(), &nats.Msg{Subject: queue.RequestSubject(m), Data: data}, jetstream.WithMsgID("other")); err != nil {
		t.Fatal(err)
	}
	s.Submit(t, appendRow(m, "after", 8))
	run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create", "same", "after")
	db, _ := latest(t, s, m)
	var count int
	db.QueryRow("SELECT count(*) FROM t WHERE n = 7").Scan(&count)
	if count != 1 {
		t.Errorf("request applied %d times, want once", count)
	}
}

func TestSecondWriterWaitsForLease(t *testing.T) {
	s := stacktest.New(t, queue.Config{LeaseTTL: 2 * time.Second})
	m := s.CreateModel(t, controldb.Model{ID: "lease"}).ID
	s.Submit(t, createTable(m, "create"), appendRow(m, "one", 1))
	h1 := run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create", "one")
	// The second db-manager must wait: it never opens the file or writes.
	h2 := run(t, s, m, nil)
	time.Sleep(3 * time.Second)
	mdl, err := s.Ctl.GetModel(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	epoch1 := mdl.WriterEpoch
	s.Submit(t, appendRow(m, "two", 2))
	if got := s.Outcomes(t, m, wait, "two"); got["two"].Status != model.StatusApplied {
		t.Fatalf("two: %+v", got["two"])
	}
	if mdl, _ := s.Ctl.GetModel(context.Background(), m); mdl.WriterEpoch != epoch1 {
		t.Fatalf("writer epoch moved from %d to %d while the first writer held the lease", epoch1, mdl.WriterEpoch)
	}
	// When the first stops, the second takes over with a larger epoch.
	if err := h1.stop(t); err != nil {
		t.Fatal(err)
	}
	s.Submit(t, appendRow(m, "three", 3))
	if got := s.Outcomes(t, m, wait, "three"); got["three"].Status != model.StatusApplied {
		t.Fatalf("three: %+v", got["three"])
	}
	if mdl, _ := s.Ctl.GetModel(context.Background(), m); mdl.WriterEpoch <= epoch1 {
		t.Errorf("epoch after takeover %d, want > %d", mdl.WriterEpoch, epoch1)
	}
	if err := h2.stop(t); err != nil {
		t.Fatal(err)
	}
	db, _ := latest(t, s, m)
	var count int
	db.QueryRow("SELECT count(*) FROM t").Scan(&count)
	if count != 3 {
		t.Errorf("%d rows, want 3", count)
	}
}

func TestStaleEpochStopsWriter(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "stale"}).ID
	s.Submit(t, createTable(m, "create"))
	h := run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create")
	// Another writer claims a newer epoch (as after a lease takeover).
	if err := s.Ctl.ClaimEpoch(context.Background(), m, 1<<40); err != nil {
		t.Fatal(err)
	}
	s.Submit(t, appendRow(m, "late", 1))
	// The db-manager must stop by itself when Postgres refuses its epoch.
	if err := h.wait(t); !errors.Is(err, dbmanager.ErrFatal) || !errors.Is(err, model.ErrStaleEpoch) {
		t.Errorf("Run = %v, want a fatal stale-epoch error", err)
	}
	if v, err := s.Ctl.GetVersion(context.Background(), m, 0); err != nil || v.Version != 1 {
		t.Errorf("latest version = %d, %v; want 1: nothing published under a stale epoch", v.Version, err)
	}
	if r, err := s.Ctl.GetRequest(context.Background(), "late"); err == nil && r.Status.Final() {
		t.Errorf("late request finished as %s under a stale epoch", r.Status)
	}
}

func TestRestoreFromSnapshotAfterLostVolume(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "dr"}).ID
	s.Submit(t, createTable(m, "create"))
	for i := range 20 {
		s.Submit(t, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	h := run(t, s, m, nil)
	s.Outcomes(t, m, wait, append([]string{"create"}, stacktest.IDs("a", 20)...)...)
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	// Requests submitted after the last version, then the volume is lost.
	// Among them, after the dedupe window, a retry of a request the
	// snapshot holds (the snapshot has no request log: Postgres has it)
	// and another request reusing such an id.
	for i := 20; i < 30; i++ {
		s.Submit(t, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	publishAfterWindow(t, s, appendRow(m, "a-3", 3), "retry-a-3")
	publishAfterWindow(t, s, stacktest.Request(m, "a-4", "delete", map[string]any{"table": "t", "where": []map[string]any{{"column": "n", "op": "=", "value": 4}}}), "reuse-a-4")
	s.Submit(t, appendRow(m, "last", 30))
	if err := removeAll(filepath.Join(s.DataDir, m)); err != nil {
		t.Fatal(err)
	}
	run(t, s, m, nil)
	s.Outcomes(t, m, wait, append(stacktest.IDs("a", 30)[20:], "last")...)
	db, v := latest(t, s, m)
	var count, distinct, bookkeeping int
	db.QueryRow("SELECT count(*), count(DISTINCT n) FROM t").Scan(&count, &distinct)
	if count != 31 || distinct != 31 {
		t.Errorf("after restore and replay: %d rows (%d distinct), want 31: each once, the reuse of a-4 not applied", count, distinct)
	}
	// A block snapshot is the live file: its bookkeeping holds the records
	// of its own requests only, the older ones are in Postgres.
	if err := db.QueryRow("SELECT (SELECT count(*) FROM _teatree.applied WHERE seq < ? OR seq > ?) + (SELECT count(*) FROM _teatree.refused WHERE seq < ? OR seq > ?)",
		v.FirstSeq, v.LastSeq, v.FirstSeq, v.LastSeq).Scan(&bookkeeping); err != nil {
		t.Fatal(err)
	}
	if bookkeeping != 0 {
		t.Errorf("the published snapshot of version %d (requests %d to %d) holds %d records of other requests", v.Version, v.FirstSeq, v.LastSeq, bookkeeping)
	}
	var refused bool
	for _, n := range notes(t, s, m, "a-4") {
		refused = refused || n.Status == model.StatusRejected && strings.Contains(n.Error, "request id a-4 is already used by model dr function append")
	}
	if !refused {
		t.Errorf("the reuse of a-4 after the restore was not rejected: %+v", notes(t, s, m, "a-4"))
	}
	want := snapshot.BlockMapKey(m, v.Version)
	if v.SnapshotURI != want || v.SnapshotFormat != controldb.FormatBlocks {
		t.Errorf("snapshot uri %s, want %s", v.SnapshotURI, want)
	}
}

// TestLostDeliveryIsNotAcknowledgedUnseen: a message delivered to a pull
// request that never reaches the db-manager (as happens when the NATS
// connection breaks) must not be acknowledged by the AckAll of a later
// batch; it is applied, in order. Found by the chaos harness.
func TestLostDeliveryIsNotAcknowledgedUnseen(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "gap"}).ID
	s.Submit(t, createTable(m, "create"))
	var lost atomic.Bool
	run(t, s, m, func(mgr *dbmanager.Manager) {
		mgr.SetLoseDelivery(func(msg jetstream.Msg) bool {
			return msg.Headers().Get(nats.MsgIdHdr) == "a-1" && lost.CompareAndSwap(false, true)
		})
	})
	for i := range 4 {
		s.Submit(t, appendRow(m, fmt.Sprintf("a-%d", i), i))
	}
	got := s.Outcomes(t, m, wait, append([]string{"create"}, stacktest.IDs("a", 4)...)...)
	if !lost.Load() {
		t.Fatal("the delivery of a-1 was never lost: the test proves nothing")
	}
	for id, n := range got {
		if n.Status != model.StatusApplied {
			t.Errorf("%s: %s %s", id, n.Status, n.Error)
		}
	}
	db, _ := latest(t, s, m)
	var ns []int
	rows, err := db.Query("SELECT n FROM t ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n int
		rows.Scan(&n)
		ns = append(ns, n)
	}
	if fmt.Sprint(ns) != "[0 1 2 3]" {
		t.Fatalf("rows %v, want [0 1 2 3]", ns)
	}
}
