package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// inProcess is a Runner that runs real db-managers in goroutines and
// records what it was asked to do.
type inProcess struct {
	t     *testing.T
	s     *stacktest.Stack
	mu    sync.Mutex
	procs map[string]context.CancelFunc
	done  map[string]chan struct{}
	log   []string
}

func (r *inProcess) Ensure(_ context.Context, m string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.procs[m]; ok {
		return nil
	}
	r.log = append(r.log, "start "+m)
	mgr, err := dbmanager.New(dbmanager.Config{Model: m, DataDir: r.s.DataDir, Threads: 1, MemoryLimit: "256MB"}, stacktest.Logger(r.t), r.s.JS, r.s.Ctl, r.s.Store)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.procs[m], r.done[m] = cancel, done
	go func() {
		defer close(done)
		if err := mgr.Run(ctx); err != nil {
			r.t.Errorf("db-manager %s: %v", m, err)
		}
	}()
	return nil
}

func (r *inProcess) Stop(_ context.Context, m string) error {
	r.mu.Lock()
	cancel, ok := r.procs[m]
	done := r.done[m]
	delete(r.procs, m)
	r.log = append(r.log, "stop "+m)
	r.mu.Unlock()
	if ok {
		cancel()
		<-done
	}
	return nil
}

func (r *inProcess) Running(context.Context) ([]string, error) { return r.running(), nil }

func (r *inProcess) running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for m := range r.procs {
		out = append(out, m)
	}
	return out
}

func (r *inProcess) events() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, ",")
}

func startDispatcher(t *testing.T, s *stacktest.Stack, cfg dispatcher.Config) *inProcess {
	r := &inProcess{t: t, s: s, procs: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dispatcher.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store, r).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
		for _, m := range r.running() {
			r.Stop(context.Background(), m)
		}
	})
	return r
}

func TestRejectsInvalidRequestsAndKeepsGoing(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "shop"}).ID
	startDispatcher(t, s, dispatcher.Config{UnknownModelGrace: 100 * time.Millisecond})
	create := stacktest.Request(m, "create", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}}})
	s.Submit(t, create,
		stacktest.Request(m, "nofunc", "explode", map[string]any{}),
		stacktest.Request(m, "badargs", "append", map[string]any{"tabel": "t"}),
		stacktest.Request(m, "nosql", "sql", map[string]any{"sql": "DELETE FROM t"}),
		stacktest.Request(m, "ok", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 1}}}),
	)
	// A request for a model that does not exist.
	s.Submit(t, stacktest.Request("ghost", "ghost-1", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 1}}}))
	// Raw messages no teactl would send: not JSON, and too large.
	pub := func(id string, data []byte) {
		t.Helper()
		if _, err := s.JS.PublishMsg(context.Background(), &nats.Msg{Subject: queue.RequestSubject(m), Data: data}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	pub("garbage", []byte("{not json"))
	big, _ := json.Marshal(stacktest.Request(m, "big", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": strings.Repeat("x", model.MaxRequestBytes)}}}))
	pub("big", big[:model.MaxRequestBytes+1000])
	s.Submit(t, stacktest.Request(m, "after", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 2}}}))

	got := s.Outcomes(t, m, time.Minute, "create", "nofunc", "badargs", "nosql", "ok", "garbage", "big", "after")
	for id, want := range map[string]model.Status{"create": model.StatusApplied, "nofunc": model.StatusRejected, "badargs": model.StatusRejected,
		"nosql": model.StatusRejected, "ok": model.StatusApplied, "garbage": model.StatusRejected, "big": model.StatusRejected, "after": model.StatusApplied} {
		if got[id].Status != want {
			t.Errorf("%s: %s (%q), want %s", id, got[id].Status, got[id].Error, want)
		}
		if want == model.StatusRejected && got[id].Error == "" {
			t.Errorf("%s rejected without a reason", id)
		}
	}
	if !strings.Contains(got["nofunc"].Error, "explode") {
		t.Errorf("unknown function error %q does not name it", got["nofunc"].Error)
	}
	ghost := s.Outcomes(t, "ghost", time.Minute, "ghost-1")["ghost-1"]
	if ghost.Status != model.StatusRejected || !strings.Contains(ghost.Error, "teactl model create") {
		t.Errorf("unknown model: %+v", ghost)
	}
	rec, err := s.Ctl.GetRequest(context.Background(), "nofunc")
	if err != nil || rec.Status != model.StatusRejected {
		t.Errorf("request_log nofunc = %+v, %v", rec, err)
	}
	// Every notification once: the db-manager does not announce rejects again.
	count := map[string]int{}
	for _, n := range s.AllNotifications(t, m) {
		count[n.RequestID]++
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("%s notified %d times", id, c)
		}
	}
}

func TestStartsPerModelAndStopsIdle(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	var ids []string
	for i := range 3 {
		m := fmt.Sprintf("m%d", i)
		s.CreateModel(t, controldb.Model{ID: m})
		s.Submit(t, stacktest.Request(m, m+"-create", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}}}))
		ids = append(ids, m)
	}
	r := startDispatcher(t, s, dispatcher.Config{IdleTimeout: time.Second})
	for _, m := range ids {
		if n := s.Outcomes(t, m, time.Minute, m+"-create")[m+"-create"]; n.Status != model.StatusApplied {
			t.Fatalf("%s: %+v", m, n)
		}
	}
	// A model whose last request failed has nothing pending either, though
	// a failed request cuts no version.
	s.Submit(t, stacktest.Request("m2", "m2-fails", "append", map[string]any{"table": "missing", "rows": []map[string]any{{"n": 1}}}))
	if n := s.Outcomes(t, "m2", time.Minute, "m2-fails")["m2-fails"]; n.Status != model.StatusFailed {
		t.Fatalf("m2-fails: %+v", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(r.running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if running := r.running(); len(running) > 0 {
		t.Fatalf("db-managers still running after the idle timeout: %v (events %s)", running, r.events())
	}
	// New work starts the model's db-manager again.
	if n := s.SubmitWait(t, stacktest.Request("m1", "m1-more", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 1}}}), time.Minute); n.Status != model.StatusApplied {
		t.Fatalf("m1-more: %+v", n)
	}
	if ev := r.events(); strings.Count(ev, "start m1") != 2 || strings.Count(ev, "start m0") != 1 {
		t.Errorf("events %s: want m1 started twice, m0 once", ev)
	}
}

// TestRunEndsWhenConsumeFails: when the dispatcher's consumer is deleted
// under it, Run returns the consumer's error instead of blocking on its
// other loops, which end only with ctx.
func TestRunEndsWhenConsumeFails(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, noRunner{}).Run(ctx)
	}()
	// Once its pull request waits on the server, consume is in Next.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := s.JS.Consumer(ctx, queue.RequestStream, queue.DispatcherName)
		if err == nil && info.CachedInfo().NumWaiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dispatcher's consumer has no pull request waiting after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.JS.DeleteConsumer(ctx, queue.RequestStream, queue.DispatcherName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Errorf("Run = %v, want the consumer deleted error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still runs 30 s after its consumer was deleted")
	}
}
