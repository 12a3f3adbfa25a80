package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// TestModelVerify: teactl model verify prints one line per version
// replayed and exits 0 when the log explains the model; after an UPDATE
// made behind the db-manager's back it exits ExitDiffers naming the table
// and version; --json is the report.
func TestModelVerify(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "ver", Retention: 20}).ID
	stop := runManagerStoppable(t, s, m)
	for _, r := range []model.Request{
		stacktest.Request(m, "c", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}, "primary_key": []string{"n"}}),
		stacktest.Request(m, "a", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 1, "v": "a"}, {"n": 2, "v": "b"}}}),
		stacktest.Request(m, "d", "derive", map[string]any{"table": "c", "query": "SELECT count(*) AS n FROM t"}),
	} {
		if n := s.SubmitWait(t, r, time.Minute); n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", r.ID, n.Status, n.Error)
		}
	}
	env := stackEnv(t, s)
	out, errOut, code := teactl(t, ctx, env, "model", "verify", m)
	if code != 0 || !strings.Contains(out, "VERSION") || !strings.Contains(out, "versions 1 to 3 are their request log") {
		t.Fatalf("verify: exit %d, %q, %q", code, out, errOut)
	}
	t.Logf("teactl model verify %s:\n%s", m, out)
	stop()
	live, err := duck.Open(ctx, filepath.Join(s.DataDir, m, m+".duckdb"), duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.ExecContext(ctx, "UPDATE t SET v = 'edited' WHERE n = 1"); err != nil {
		t.Fatal(err)
	}
	live.Close()
	runManagerStoppable(t, s, m)
	s.SubmitWait(t, stacktest.Request(m, "a2", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 3, "v": "c"}}}), time.Minute)
	out, errOut, code = teactl(t, ctx, env, "model", "verify", m, "--json")
	var rep dbmanager.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != ExitDiffers || rep.OK || len(rep.Versions) != 4 {
		t.Fatalf("verify after an edit: exit %d, %q, %q (%v)", code, out, errOut, err)
	}
	if !strings.Contains(errOut, "version 4: table t differs from version 4") {
		t.Errorf("verify after an edit: stderr %q, want the version and table named", errOut)
	}
	if out, errOut, code = teactl(t, ctx, env, "model", "verify", m, "--from-version", "9"); code == 0 || !strings.Contains(errOut, "no retained version 9") {
		t.Errorf("verify --from-version 9: exit %d, %q, %q", code, out, errOut)
	}
}

// runManagerStoppable runs a real db-manager for model m on s; the
// returned function stops it (also run at the test's end).
func runManagerStoppable(t *testing.T, s *stacktest.Stack, m string) func() {
	t.Helper()
	cfg := dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
	mgr, err := dbmanager.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("db-manager did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}
