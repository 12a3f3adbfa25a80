//go:build duckdb_arrow

package cli

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// managers is a dispatcher.Runner that runs real db-managers in this
// process (the LocalRunner runs them as child processes of a binary).
type managers struct {
	t    *testing.T
	s    *stacktest.Stack
	mu   sync.Mutex
	stop map[string]func()
}

func (r *managers) Ensure(_ context.Context, m string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop[m] != nil {
		return nil
	}
	cfg := dbmanager.Config{Model: m, DataDir: r.s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
	mgr, err := dbmanager.New(cfg, stacktest.Logger(r.t), r.s.JS, r.s.Ctl, r.s.Store)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	r.stop[m] = func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("db-manager %s: %v", m, err)
		}
	}
	return nil
}

func (r *managers) Stop(_ context.Context, m string) error {
	r.mu.Lock()
	stop := r.stop[m]
	delete(r.stop, m)
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	return nil
}

func (r *managers) Running(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for m := range r.stop {
		out = append(out, m)
	}
	return out, nil
}

// startDispatcher runs a dispatcher with in-process db-managers on s
// until the test ends.
func startDispatcher(t *testing.T, s *stacktest.Stack) {
	t.Helper()
	r := &managers{t: t, s: s, stop: map[string]func(){}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, r).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
		ms, _ := r.Running(context.Background())
		for _, m := range ms {
			r.Stop(context.Background(), m)
		}
	})
}

// infoOf runs teactl info --json and returns the one process of kind.
func infoOf(t *testing.T, env map[string]string, kind string) svcinfo.Info {
	t.Helper()
	out, errOut, code := teactl(t, context.Background(), env, "info", "--json")
	if code != 0 {
		t.Fatalf("info: exit %d: %s", code, errOut)
	}
	var all []svcinfo.Info
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("info: %v: %s", err, out)
	}
	var found []svcinfo.Info
	for _, in := range all {
		if in.Kind == kind {
			found = append(found, in)
		}
	}
	if len(found) != 1 {
		t.Fatalf("info: %d processes of kind %s, want 1: %s", len(found), kind, out)
	}
	return found[0]
}

// TestPingAndInfoListEveryProcess: teactl ping lists the dispatcher, the
// db-manager it started and a reader; teactl info shows the db-manager's
// model, a position that advances with each applied request, its lag, and
// a failed request as its last error.
func TestPingAndInfoListEveryProcess(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "infos"}).ID
	startDispatcher(t, s)
	startReader(t, s, 64<<10)
	env := stackEnv(t, s)
	create := stacktest.Request(m, "create-1", "create_table", map[string]any{
		"table": "t", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}}, "primary_key": []string{"id"}})
	if n := s.SubmitWait(t, create, time.Minute); n.Status != model.StatusApplied {
		t.Fatalf("create_table: %+v", n)
	}

	out, errOut, code := teactl(t, context.Background(), env, "ping", "--json")
	if code != 0 {
		t.Fatalf("ping: exit %d: %s", code, errOut)
	}
	var ps []svcinfo.Pinged
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("ping: %v: %s", err, out)
	}
	var kinds []string
	for _, p := range ps {
		kinds = append(kinds, p.Name)
		if p.Version != svcinfo.Version() || p.RTT <= 0 {
			t.Errorf("ping: %+v, want version %s and a round trip", p, svcinfo.Version())
		}
	}
	if want := []string{svcinfo.DBManager, svcinfo.Dispatcher, svcinfo.Reader}; !slices.Equal(kinds, want) {
		t.Errorf("ping lists %v, want %v", kinds, want)
	}
	if out, _, _ := teactl(t, context.Background(), env, "ping"); !strings.Contains(out, "model="+m) || !strings.Contains(out, "role=leader") {
		t.Errorf("ping table without the db-manager's model or the dispatcher's role:\n%s", out)
	}

	dbm := infoOf(t, env, svcinfo.DBManager)
	if !slices.Equal(dbm.Models, []string{m}) || dbm.Position == 0 || dbm.Lag == nil || *dbm.Lag != 0 ||
		dbm.Started.IsZero() || dbm.Memory.GoSys == 0 || dbm.LastError != nil {
		t.Fatalf("db-manager info %+v: want model %s, a position, lag 0, uptime, memory, no error", dbm, m)
	}
	if n := s.SubmitWait(t, stacktest.Request(m, "append-1", "append", map[string]any{"table": "t", "rows": []map[string]any{{"id": 1}}}), time.Minute); n.Status != model.StatusApplied {
		t.Fatalf("append: %+v", n)
	}
	after := infoOf(t, env, svcinfo.DBManager)
	if after.Position <= dbm.Position {
		t.Errorf("position %d after an applied request, was %d", after.Position, dbm.Position)
	}
	if n := s.SubmitWait(t, stacktest.Request(m, "bad-1", "append", map[string]any{"table": "nope", "rows": []map[string]any{{"id": 1}}}), time.Minute); n.Status != model.StatusFailed {
		t.Fatalf("append to a missing table: %+v, want failed", n)
	}
	failed := infoOf(t, env, svcinfo.DBManager)
	if failed.LastError == nil || !strings.Contains(failed.LastError.Error, "bad-1") || failed.LastError.Time.Before(dbm.Started) {
		t.Errorf("db-manager last error %+v, want the failed request bad-1", failed.LastError)
	}
	if d := infoOf(t, env, svcinfo.Dispatcher); !slices.Equal(d.Models, []string{m}) || d.Lag == nil || d.Position < failed.Position {
		t.Errorf("dispatcher info %+v: want db-manager %s running, its consumer's position and lag", d, m)
	}

	out, _, _ = teactl(t, context.Background(), env, "info")
	t.Logf("teactl info:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "KIND") || !strings.Contains(out, "bad-1") {
		t.Errorf("info table:\n%s", out)
	}
}
