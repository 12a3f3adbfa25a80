package dispatcher_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// noRunner starts no db-manager: requests stay pending.
type noRunner struct{}

func (noRunner) Ensure(context.Context, string) error      { return nil }
func (noRunner) Stop(context.Context, string) error        { return nil }
func (noRunner) Running(context.Context) ([]string, error) { return nil, nil }

// runDispatcher runs a dispatcher with noRunner until the test ends.
func runDispatcher(t *testing.T, s *stacktest.Stack, cfg dispatcher.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dispatcher.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store, noRunner{}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
}

// put stages data at key, modified age ago.
func put(t *testing.T, s *stacktest.Stack, key string, age time.Duration) {
	t.Helper()
	p := filepath.Join(s.StoreDir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("n\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

// exists reports whether the object key exists.
func exists(t *testing.T, s *stacktest.Stack, key string) bool {
	t.Helper()
	_, err := s.Store.Stat(context.Background(), key)
	return err == nil
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestRejectedRequestPayloadDeleted: the dispatcher deletes a rejected
// request's staged payload (bad args, an unknown model) with the
// rejection, before announcing it, and only under the prefix
// of the model the request was published for: not the payload of a valid
// request whose id a bad request reuses, and not another model's.
func TestRejectedRequestPayloadDeleted(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	m := s.CreateModel(t, controldb.Model{ID: "pay"}).ID
	s.CreateModel(t, controldb.Model{ID: "other"})
	rejected := model.StagingPrefix(m, "bad-1") + "f.csv"
	keep := model.StagingPrefix(m, "keep-1") + "f.csv"
	otherModel := model.StagingPrefix("other", "x-1") + "f.csv"
	ghost := model.StagingPrefix("ghost", "g-1") + "f.csv" // a model that does not exist
	for _, k := range []string{rejected, keep, otherModel, ghost} {
		put(t, s, k, 0)
	}
	pay := func(id, table, uri string) model.Request {
		return stacktest.Request(m, id, "append", map[string]any{"table": table, "payload": map[string]any{"uri": uri}})
	}
	raw := func(msgID, body string) {
		t.Helper()
		if _, err := s.JS.PublishMsg(ctx, &nats.Msg{Subject: queue.RequestSubject(m), Data: []byte(body)}, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	runDispatcher(t, s, dispatcher.Config{UnknownModelGrace: 100 * time.Millisecond})
	s.Submit(t, pay("bad-1", "not a table!", rejected), pay("keep-1", "t", keep))
	s.Submit(t, stacktest.Request("ghost", "g-1", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": ghost}}))
	// Bad requests that reuse the valid request's id, or name another
	// model in the body of a request published for this one.
	raw("hostile-1", `{"request_id":"keep-1","model":"pay","function":"append","args":{"table":"no table!","payload":{"uri":"`+keep+`"}}}`)
	raw("hostile-2", `{"request_id":"x-1","model":"other","function":"append","args":{"table":"t","payload":{"uri":"`+otherModel+`"}}}`)

	waitFor(t, "three rejections", func() bool {
		n := 0
		for _, note := range s.AllNotifications(t, m) {
			if note.Status == model.StatusRejected {
				n++
			}
		}
		return n == 3 && len(s.AllNotifications(t, "ghost")) == 1
	})
	for _, k := range []string{rejected, ghost} {
		if exists(t, s, k) {
			t.Errorf("the rejected request's payload %s is still staged", k)
		}
	}
	if !exists(t, s, keep) {
		t.Errorf("a bad request reusing id keep-1 deleted the valid request's payload")
	}
	if !exists(t, s, otherModel) {
		t.Errorf("a request published for %s deleted a payload of model other", m)
	}
}

// TestSweepDeletesAbandonedPayloads: the sweep deletes staged objects
// older than the grace period whose request is not pending (never
// submitted, or finished), and keeps younger ones, those of pending
// requests and everything outside staging/.
func TestSweepDeletesAbandonedPayloads(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	m := s.CreateModel(t, controldb.Model{ID: "sweep"}).ID
	old, grace := 3*time.Hour, time.Hour
	abandoned := model.StagingPrefix(m, "abandoned-1") + "f.csv"
	abandoned2 := model.StagingPrefix(m, "abandoned-1") + "sub/g.csv"
	finished := model.StagingPrefix(m, "done-1") + "f.csv"
	pending := model.StagingPrefix(m, "pending-1") + "f.csv"
	young := model.StagingPrefix(m, "young-1") + "f.csv"
	restaged := model.StagingPrefix(m, "restaged-1") + "old.csv"
	restagedNew := model.StagingPrefix(m, "restaged-1") + "new.csv"
	junk := "staging/0190d0c8-old-form/f.csv"
	version := "models/" + m + "/versions/1/" + m + ".duckdb"
	for _, k := range []string{abandoned, abandoned2, finished, pending, restaged, junk, version} {
		put(t, s, k, old)
	}
	put(t, s, young, 0)
	put(t, s, restagedNew, 0)
	now := time.Now()
	if err := s.Ctl.RecordRequests(ctx, []controldb.RequestRecord{
		{RequestID: "done-1", Model: m, Function: "append", Status: model.StatusApplied, StreamSeq: 1, Submitted: now.Add(-old), Finished: now},
		{RequestID: "pending-1", Model: m, Function: "append", Status: model.StatusQueued, StreamSeq: 2, Submitted: now.Add(-old)},
	}); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, s, dispatcher.Config{StagingGrace: grace, StagingSweep: 100 * time.Millisecond})
	waitFor(t, "the abandoned payloads are swept", func() bool {
		return !exists(t, s, abandoned) && !exists(t, s, abandoned2) && !exists(t, s, finished) && !exists(t, s, junk)
	})
	time.Sleep(300 * time.Millisecond) // a few more sweeps
	objs, err := s.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, o := range objs {
		left = append(left, o.Key)
	}
	want := []string{version, pending, restagedNew, restaged, young}
	slices.Sort(want)
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("objects left %v, want %v", left, want)
	}
}
