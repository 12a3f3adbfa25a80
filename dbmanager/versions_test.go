package dbmanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// publishAfterWindow publishes r under another Nats-Msg-Id, as a retry
// published after JetStream's dedupe window reaches the stream.
func publishAfterWindow(t *testing.T, s *stacktest.Stack, r model.Request, msgID string) uint64 {
	t.Helper()
	data, _ := json.Marshal(r)
	ack, err := s.JS.PublishMsg(context.Background(), &nats.Msg{Subject: queue.RequestSubject(r.Model), Data: data}, jetstream.WithMsgID(msgID))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// notes returns the final notifications of request id on model m.
func notes(t *testing.T, s *stacktest.Stack, m, id string) []model.Notification {
	t.Helper()
	var out []model.Notification
	for _, n := range s.AllNotifications(t, m) {
		if n.RequestID == id && n.Status.Final() {
			out = append(out, n)
		}
	}
	return out
}

// TestReusedRequestIDIsRefused: beyond the dedupe window JetStream keeps a
// request that reuses an id. A true retry (same model, function, args) is
// skipped; a different request under the id, on the same model (in the
// same batch or later) or on another model, is rejected with a message
// naming the model and function that hold the id, is never applied, and
// leaves the first request's record alone.
func TestReusedRequestIDIsRefused(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	one := s.CreateModel(t, controldb.Model{ID: "one"}).ID
	s.Submit(t, createTable(one, "c1"), appendRow(one, "r", 1))
	publishAfterWindow(t, s, appendRow(one, "r", 1), "retry-1")
	sameBatch := publishAfterWindow(t, s, appendRow(one, "r", 2), "reuse-1")
	run(t, s, one, nil)
	s.Outcomes(t, one, wait, "c1", "r")
	later := publishAfterWindow(t, s, stacktest.Request(one, "r", "delete", map[string]any{"table": "t", "where": []map[string]any{{"column": "n", "op": "=", "value": 1}}}), "reuse-2")
	publishAfterWindow(t, s, appendRow(one, "r", 1), "retry-2")
	s.Submit(t, appendRow(one, "after", 9))
	s.Outcomes(t, one, wait, "after")

	two := s.CreateModel(t, controldb.Model{ID: "two"}).ID
	s.Submit(t, createTable(two, "c2"))
	other := publishAfterWindow(t, s, appendRow(two, "r", 5), "reuse-3")
	s.Submit(t, appendRow(two, "after2", 6))
	run(t, s, two, nil)
	s.Outcomes(t, two, wait, "c2", "after2")

	first, err := s.Ctl.GetRequest(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("request id r is already used by model one function append (stream sequence %d)", first.StreamSeq)
	check := func(m string, wantSeqs ...uint64) {
		t.Helper()
		var rejected []uint64
		applied := 0
		for _, n := range notes(t, s, m, "r") {
			switch {
			case n.Status == model.StatusApplied:
				applied++
			case n.Status == model.StatusRejected && strings.Contains(n.Error, want):
				rejected = append(rejected, n.Seq)
			default:
				t.Errorf("%s: notification %+v", m, n)
			}
		}
		if fmt.Sprint(rejected) != fmt.Sprint(wantSeqs) {
			t.Errorf("%s: rejected notifications of r at sequences %v, want %v saying %q", m, rejected, wantSeqs, want)
		}
		if wantApplied := map[string]int{one: 1, two: 0}[m]; applied != wantApplied {
			t.Errorf("%s: r notified applied %d times, want %d", m, applied, wantApplied)
		}
	}
	check(one, sameBatch, later)
	check(two, other)
	for m, wantRows := range map[string]string{one: "[1 9]", two: "[6]"} {
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
		rows.Close()
		if fmt.Sprint(ns) != wantRows {
			t.Errorf("%s: rows %v, want %s (no reuse applied, no retry applied twice)", m, ns, wantRows)
		}
	}
	if first.Model != one || first.Function != "append" || first.Status != model.StatusApplied {
		t.Errorf("request log of r = %+v, want the first request's (one, append, applied)", first)
	}
}

// TestFailedRequestsCutNoVersion: a version must change something. A
// range of failed requests is recorded in the request log (failed, no
// version) and notified, durably across a crash before its publication,
// without a version; versions stay contiguous and retention counts only
// them; the dispatcher sees the model settled.
func TestFailedRequestsCutNoVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "fails", Retention: 2}).ID
	s.Submit(t, createTable(m, "create"))
	h := run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create")
	s.Submit(t, appendRow(m, "a", 1))
	s.Outcomes(t, m, wait, "a")
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	before, err := s.Ctl.ListVersions(context.Background(), m, true)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(id string) model.Request {
		return stacktest.Request(m, id, "append", map[string]any{"table": "missing", "rows": []map[string]any{{"n": 1}}})
	}
	var lastBad uint64
	for i := range 4 {
		lastBad = publishAfterWindow(t, s, bad(fmt.Sprintf("bad-%d", i)), fmt.Sprintf("bad-%d", i))
	}
	// A staged file that is not Parquet: it fails, and its payload goes
	// (at the latest with the next version).
	staged := "staging/" + m + "/bad-4/f.parquet"
	if err := s.Store.Put(context.Background(), staged, strings.NewReader("not parquet"), 11); err != nil {
		t.Fatal(err)
	}
	lastBad = publishAfterWindow(t, s, stacktest.Request(m, "bad-4", "append", map[string]any{"table": "missing", "payload": map[string]any{"uri": staged, "format": "parquet"}}), "bad-4")
	// The batch commits, then the db-manager "dies" before anything of it
	// is published; the restart must publish it.
	var commits atomic.Int32
	h = run(t, s, m, func(mgr *dbmanager.Manager) {
		mgr.SetCrashAfterCommit(func() bool { return commits.Add(1) == 1 })
	})
	if err := h.wait(t); !errors.Is(err, dbmanager.ErrFatal) {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	run(t, s, m, nil)
	got := s.Outcomes(t, m, wait, stacktest.IDs("bad", 5)...)
	for id, n := range got {
		if n.Status != model.StatusFailed || n.Version != 0 || n.Error == "" {
			t.Errorf("%s: %+v, want failed without a version", id, n)
		}
		rec, err := s.Ctl.GetRequest(context.Background(), id)
		if err != nil || rec.Status != model.StatusFailed || rec.Version != 0 || rec.Error == "" {
			t.Errorf("request log of %s: %+v, %v; want failed without a version", id, rec, err)
		}
	}
	after, err := s.Ctl.ListVersions(context.Background(), m, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("%d versions after 5 failed requests, %d before: failed requests cut a version", len(after), len(before))
	}
	if mdl, _ := s.Ctl.GetModel(context.Background(), m); mdl.SettledSeq < lastBad {
		t.Errorf("settled sequence %d, want at least %d: the dispatcher would see pending work forever", mdl.SettledSeq, lastBad)
	}
	// The next change is the next version, and retention still has the
	// real ones.
	s.Submit(t, appendRow(m, "b", 2))
	if n := s.Outcomes(t, m, wait, "b")["b"]; n.Status != model.StatusApplied || n.Version != before[len(before)-1].Version+1 {
		t.Errorf("b: %+v, want applied in version %d", n, before[len(before)-1].Version+1)
	}
	deadline := time.Now().Add(wait)
	for {
		_, err := s.Store.Stat(context.Background(), staged)
		if errors.Is(err, model.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staged payload of the failed bad-4 still there after the next version: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	kept, err := s.Ctl.ListVersions(context.Background(), m, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) < 2 {
		t.Errorf("%d versions kept, want the retention of 2", len(kept))
	}
	for _, v := range kept {
		if v.FirstSeq <= lastBad && v.LastSeq >= lastBad-4 {
			t.Errorf("version %d covers the failed requests (%d..%d)", v.Version, v.FirstSeq, v.LastSeq)
		}
	}
}
