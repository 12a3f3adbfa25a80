package dbmanager_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// cancel records the cancel of request id of model m through the client,
// as teactl cancel does, and returns what the client reports.
func cancel(t *testing.T, s *stacktest.Stack, m, id string) (model.Notification, bool) {
	t.Helper()
	ctx, stop := context.WithTimeout(context.Background(), wait)
	defer stop()
	res, err := s.Client.Cancel(ctx, m, id)
	if err != nil {
		t.Fatalf("cancel %s: %v", id, err)
	}
	if res.Final != nil {
		return model.Notification{RequestID: id, Status: res.Final.Status, Version: res.Final.Version}, false
	}
	return model.Notification{}, true
}

// rows returns the values of column n of table t in the latest version.
func rowsOf(t *testing.T, s *stacktest.Stack, m string) []int {
	t.Helper()
	db, _ := latest(t, s, m)
	rs, err := db.Query("SELECT n FROM t ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []int
	for rs.Next() {
		var n int
		rs.Scan(&n)
		out = append(out, n)
	}
	return out
}

// TestCancelBeforeApply: a request cancelled while queued is skipped with
// status cancelled (notification and request log), the others of its
// batch are applied, and nothing of it is in the version.
func TestCancelBeforeApply(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "cancel-before"}).ID
	s.Submit(t, createTable(m, "create"), appendRow(m, "a-1", 1), appendRow(m, "a-2", 2), appendRow(m, "a-3", 3))
	// The db-manager is not running yet: a-2 is queued. Without Postgres'
	// record (the dispatcher is not running) the model is named.
	if _, recorded := cancel(t, s, m, "a-2"); !recorded {
		t.Fatal("cancel of a queued request was not recorded")
	}
	run(t, s, m, nil)
	got := s.Outcomes(t, m, wait, "create", "a-1", "a-2", "a-3")
	if st := got["a-2"].Status; st != model.StatusCancelled {
		t.Fatalf("a-2: %s %s, want cancelled", st, got["a-2"].Error)
	}
	for _, id := range []string{"a-1", "a-3"} {
		if got[id].Status != model.StatusApplied {
			t.Errorf("%s: %s, want applied", id, got[id].Status)
		}
	}
	if r := rowsOf(t, s, m); len(r) != 2 || r[0] != 1 || r[1] != 3 {
		t.Errorf("rows %v, want [1 3]", r)
	}
	rec, err := s.Ctl.GetRequest(context.Background(), "a-2")
	if err != nil || rec.Status != model.StatusCancelled {
		t.Fatalf("request log: %+v, %v; want cancelled", rec, err)
	}
	// A second cancel is told the outcome.
	if n, recorded := cancel(t, s, "", "a-2"); recorded || n.Status != model.StatusCancelled {
		t.Errorf("second cancel: recorded %v, %+v", recorded, n)
	}
}

// TestCancelTooLate: a cancel of a request applied already is not
// recorded and names the version that applied it.
func TestCancelTooLate(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "cancel-late"}).ID
	run(t, s, m, nil)
	s.SubmitWait(t, createTable(m, "create"), wait)
	n := s.SubmitWait(t, appendRow(m, "a-1", 1), wait)
	if n.Status != model.StatusApplied {
		t.Fatalf("a-1: %s", n.Status)
	}
	got, recorded := cancel(t, s, "", "a-1")
	if recorded || got.Status != model.StatusApplied || got.Version != n.Version {
		t.Fatalf("late cancel: recorded %v, %+v; want applied in version %d", recorded, got, n.Version)
	}
}

// TestCancelRace: the db-manager reads the cancels of a batch once,
// before it applies any of it. A cancel recorded just before that read
// wins; one recorded just after it loses, and the client's wait reports
// the version that applied the request.
func TestCancelRace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before bool
		want   model.Status
	}{
		{"cancel first", true, model.StatusCancelled},
		{"apply first", false, model.StatusApplied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stacktest.New(t, queue.Config{})
			m := s.CreateModel(t, controldb.Model{ID: "cancel-race"}).ID
			s.Submit(t, createTable(m, "create"))
			var armed atomic.Bool
			hook := func() {
				if armed.CompareAndSwap(true, false) {
					cancel(t, s, m, "a-1")
				}
			}
			run(t, s, m, func(mgr *dbmanager.Manager) {
				if tc.before {
					mgr.SetCancelHooks(hook, nil)
				} else {
					mgr.SetCancelHooks(nil, hook)
				}
			})
			s.Outcomes(t, m, wait, "create")
			armed.Store(true)
			ctx, stop := context.WithTimeout(context.Background(), wait)
			defer stop()
			rc, err := s.Client.Submit(ctx, appendRow(m, "a-1", 1))
			if err != nil {
				t.Fatal(err)
			}
			n, err := s.Client.Wait(ctx, rc)
			if err != nil {
				t.Fatal(err)
			}
			if n.Status != tc.want {
				t.Fatalf("a-1: %s, want %s", n.Status, tc.want)
			}
			if tc.want == model.StatusApplied && n.Version == 0 {
				t.Error("applied without a version")
			}
			if armed.Load() {
				t.Fatal("the hook did not run")
			}
		})
	}
}

// TestCancelExactlyOnceAcrossCrash: the db-manager dies after committing
// the cancelled decision and before acknowledging the batch (as a kill -9
// there would); its successor skips the redelivered request: one
// cancelled notification, never applied.
func TestCancelExactlyOnceAcrossCrash(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "cancel-crash"}).ID
	s.Submit(t, createTable(m, "create"), appendRow(m, "a-1", 1), appendRow(m, "a-2", 2))
	cancel(t, s, m, "a-1")
	var commits atomic.Int32
	h := run(t, s, m, func(mgr *dbmanager.Manager) {
		mgr.SetCrashAfterCommit(func() bool { return commits.Add(1) == 1 })
	})
	if err := h.wait(t); !errors.Is(err, dbmanager.ErrFatal) {
		t.Fatalf("Run = %v, want the simulated crash", err)
	}
	run(t, s, m, nil)
	got := s.Outcomes(t, m, wait, "create", "a-1", "a-2")
	if got["a-1"].Status != model.StatusCancelled || got["a-2"].Status != model.StatusApplied {
		t.Fatalf("a-1 %s, a-2 %s; want cancelled, applied", got["a-1"].Status, got["a-2"].Status)
	}
	time.Sleep(200 * time.Millisecond) // a second notification would be published by now
	count := map[string]int{}
	for _, n := range s.AllNotifications(t, m) {
		count[n.RequestID+"/"+string(n.Status)]++
	}
	if count["a-1/cancelled"] != 1 || count["a-1/applied"] != 0 {
		t.Errorf("a-1 notified %v", count)
	}
	if r := rowsOf(t, s, m); len(r) != 1 || r[0] != 2 {
		t.Errorf("rows %v, want [2]", r)
	}
}
