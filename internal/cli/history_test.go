package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// TestPinCommands: teactl pin names a version; versions, show, pull and
// query read MODEL@NAME (resolved here, in Postgres); unpin removes it.
func TestPinCommands(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "hist", SizeClass: "small", Retention: 1})
	for n := int64(1); n <= 3; n++ {
		publish(t, s, "hist", n, int(n))
	}
	env := stackEnv(t, s)
	if out, errOut, code := teactl(t, ctx, env, "pin", "hist", "2", "--name", "release"); code != 0 || out != "hist version 2 pinned as hist@release\n" {
		t.Fatalf("pin: exit %d, %q, %q", code, out, errOut)
	}
	if _, errOut, code := teactl(t, ctx, env, "pin", "hist", "2", "--name", "2x"); code != ExitUsage || !strings.Contains(errOut, "starting with a letter") {
		t.Errorf("pin with a bad name: exit %d, %q", code, errOut)
	}
	out, _, _ := teactl(t, ctx, env, "versions", "hist")
	if !strings.Contains(out, "PINS") || !strings.Contains(out, "release") {
		t.Errorf("versions shows no pin: %q", out)
	}
	out, errOut, code := teactl(t, ctx, env, "show", "hist@release")
	if code != 0 || !strings.HasPrefix(out, "version 2 (pinned: release)\n") {
		t.Errorf("show hist@release: exit %d, %q, %q", code, out, errOut)
	}
	out, errOut, code = teactl(t, ctx, env, "pull", "hist@release", "-o", filepath.Join(t.TempDir(), "p.duckdb"), "--json")
	var pulled struct{ Version int64 }
	if json.Unmarshal([]byte(out), &pulled); code != 0 || pulled.Version != 2 {
		t.Errorf("pull hist@release: exit %d, %q, %q", code, out, errOut)
	}
	out, errOut, code = teactl(t, ctx, env, "query", "hist@release", "SELECT max(v) AS v FROM t", "--local", "--format", "csv")
	if code != 0 || !strings.Contains(out, "v2") {
		t.Errorf("query hist@release: exit %d, %q, %q", code, out, errOut)
	}
	// Retention keeps 1, and the pin.
	teactl(t, ctx, env, "gc", "hist")
	if _, err := s.Ctl.GetVersion(ctx, "hist", 2); err != nil {
		t.Errorf("pinned version 2 after gc: %v", err)
	}
	out, _, _ = teactl(t, ctx, env, "log", "hist")
	if !strings.HasPrefix(out, "version 3\n") || !strings.Contains(out, "version 2 (pinned: release)") || strings.Contains(out, "version 1") {
		t.Errorf("log: %q", out)
	}
	if out, errOut, code := teactl(t, ctx, env, "unpin", "hist", "release"); code != 0 || out != "hist@release unpinned (version 2)\n" {
		t.Errorf("unpin: exit %d, %q, %q", code, out, errOut)
	}
	if _, errOut, code := teactl(t, ctx, env, "pull", "hist@release"); code != ExitError || !strings.Contains(errOut, `has no pin "release"`) {
		t.Errorf("pull of a removed pin: exit %d, %q", code, errOut)
	}
}

// TestCancelCommand: teactl cancel of a queued request records the cancel
// in the bucket the db-manager reads; of an applied one it is too late
// (exit 8) and names the version.
func TestCancelCommand(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "cx", SizeClass: "small"})
	env := stackEnv(t, s)
	now := time.Now().UTC()
	// As the dispatcher and a db-manager would record them.
	if err := s.Ctl.RecordRequests(ctx, []controldb.RequestRecord{
		{RequestID: "queued-1", Model: "cx", Function: "append", Status: model.StatusQueued, StreamSeq: 7, Submitted: now},
		{RequestID: "done-1", Model: "cx", Function: "append", Status: model.StatusApplied, Version: 4, StreamSeq: 6, Submitted: now, Finished: now},
	}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := teactl(t, ctx, env, "cancel", "queued-1", "--no-wait")
	if code != 0 || !strings.Contains(out, "cancel of queued-1 recorded") {
		t.Fatalf("cancel: exit %d, %q, %q", code, out, errOut)
	}
	ids, err := queue.CancelledIDs(ctx, s.JS, "cx")
	if err != nil || !ids["queued-1"] || len(ids) != 1 {
		t.Errorf("cancels of cx: %v, %v", ids, err)
	}
	_, errOut, code = teactl(t, ctx, env, "cancel", "done-1")
	if code != ExitTooLate || strings.TrimSpace(errOut) != "teactl: too late: request done-1 was applied in version 4 before the cancel reached the db-manager" {
		t.Errorf("late cancel: exit %d, %q", code, errOut)
	}
	if _, errOut, code = teactl(t, ctx, env, "cancel", "nosuch"); code != ExitError || !strings.Contains(errOut, "name its model") {
		t.Errorf("cancel of an unknown request: exit %d, %q", code, errOut)
	}
	if _, errOut, code = teactl(t, ctx, env, "cancel", "queued-1", "--model", "other"); code != ExitUsage || !strings.Contains(errOut, "is a request of model cx") {
		t.Errorf("cancel naming the wrong model: exit %d, %q", code, errOut)
	}
}
