package dbmanager_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// logTo makes a db-manager log at debug level into buf (and the test log
// when the test fails).
func logTo(t *testing.T, buf *stacktest.SyncBuffer) func(*dbmanager.Manager) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(buf.String())
		}
	})
	return func(mgr *dbmanager.Manager) {
		mgr.SetLog(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
}

// waitLog waits until buf holds msg at least n times; it fails at once
// when buf holds "request failed".
func waitLog(t *testing.T, buf *stacktest.SyncBuffer, msg string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(buf.String(), msg) < n {
		if strings.Contains(buf.String(), `msg="request failed"`) {
			t.Fatalf("a request failed while waiting for %q", msg)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times in %s, want %d", msg, strings.Count(buf.String(), msg), timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOutOfMemoryIsRetried: a request whose query needs more memory than
// the db-manager's memory_limit is not the request's fault. It is retried
// (the request after it waits), never failed, and applied once the
// db-manager runs again with a larger limit.
func TestOutOfMemoryIsRetried(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "oom", AllowSQL: true}).ID
	// A list aggregate of 20 M BIGINTs (160 MB) does not spill to disk.
	big := stacktest.Request(m, "big", "sql", map[string]string{"sql": "CREATE TABLE big AS SELECT list(i)[20000000] AS last FROM range(20000000) t(i)"})
	s.Submit(t, createTable(m, "create"))

	var buf stacktest.SyncBuffer
	small := run(t, s, m, func(mgr *dbmanager.Manager) {
		logTo(t, &buf)(mgr)
		mgr.SetMemoryLimit("32MB")
	})
	s.Outcomes(t, m, wait, "create")
	s.Submit(t, big, appendRow(m, "after", 1))
	waitLog(t, &buf, "batch not applied, retrying", 3, wait)
	if !strings.Contains(buf.String(), "Out of Memory") {
		t.Fatal("retried, but not for DuckDB's out of memory")
	}
	for _, n := range s.AllNotifications(t, m) {
		if n.RequestID != "create" {
			t.Fatalf("%s notified %s (%s) while memory was short; want it retried", n.RequestID, n.Status, n.Error)
		}
	}
	for _, id := range []string{"big", "after"} {
		// No dispatcher runs: the request log knows a request once the
		// db-manager published it.
		if r, err := s.Ctl.GetRequest(context.Background(), id); err == nil || !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("request %s: %s, %v; want it not yet in the request log", id, r.Status, err)
		}
	}
	if err := small.stop(t); err != nil {
		t.Fatalf("Run = %v at shutdown during the retry", err)
	}

	run(t, s, m, func(mgr *dbmanager.Manager) { mgr.SetMemoryLimit("1GB") })
	got := s.Outcomes(t, m, wait, "big", "after")
	for _, id := range []string{"big", "after"} {
		if got[id].Status != model.StatusApplied {
			t.Errorf("%s: %s %s; want applied once memory suffices", id, got[id].Status, got[id].Error)
		}
	}
	if got["after"].Version < got["big"].Version {
		t.Errorf("after in version %d, before big's %d", got["after"].Version, got["big"].Version)
	}
	db, _ := latest(t, s, m)
	var last int64
	if err := db.QueryRow("SELECT last FROM big").Scan(&last); err != nil || last != 19999999 {
		t.Errorf("big.last = %d, %v; want 19999999", last, err)
	}
}

// TestShutdownDuringPublicationBackoff: while the object store fails, the
// publisher backs off for longer and longer; a shutdown in the middle of a
// wait (just after a batch committed, which wakes the publisher) returns
// at once, and nothing is lost: the next run publishes everything.
func TestShutdownDuringPublicationBackoff(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "backoff"}).ID
	s.Submit(t, createTable(m, "create"))
	var buf stacktest.SyncBuffer
	h := run(t, s, m, logTo(t, &buf))
	s.Outcomes(t, m, wait, "create")

	// Break the store: its root becomes a file, so every Put fails.
	away := s.StoreDir + ".away"
	if err := os.Rename(s.StoreDir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.StoreDir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		os.Remove(s.StoreDir)
		if err := os.Rename(away, s.StoreDir); err != nil {
			t.Fatal(err)
		}
	}
	s.Submit(t, appendRow(m, "a-0", 0))
	// Five failures in a row: the next wait is some seconds long.
	waitLog(t, &buf, "publication paused, retrying", 5, wait)
	s.Submit(t, appendRow(m, "a-1", 1))
	waitLog(t, &buf, "batch committed", 3, wait)
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	h.cancel()
	err := h.wait(t)
	took := time.Since(start)
	restore()
	if err != nil {
		t.Fatalf("Run = %v at shutdown", err)
	}
	t.Logf("Run returned %s after the shutdown", took)
	if took > 2*time.Second {
		t.Errorf("Run returned %s after the shutdown; want it to stop waiting out the backoff", took)
	}
	for _, n := range s.AllNotifications(t, m) {
		if n.RequestID != "create" {
			t.Errorf("%s notified while the store was down", n.RequestID)
		}
	}

	run(t, s, m, nil)
	got := s.Outcomes(t, m, wait, "a-0", "a-1")
	for id, n := range got {
		if n.Status != model.StatusApplied {
			t.Errorf("%s: %s %s", id, n.Status, n.Error)
		}
	}
}
