package dbmanager_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// dbmanagerInfo waits up to a minute for the one db-manager's info
// (svcinfo.Gather) to satisfy ok, and returns it.
func dbmanagerInfo(t *testing.T, s *stacktest.Stack, ok func(svcinfo.Info) bool) svcinfo.Info {
	t.Helper()
	var last []svcinfo.Info
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		all, err := svcinfo.Gather(s.NC, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		last = all
		for _, in := range all {
			if in.Kind == svcinfo.DBManager && ok(in) {
				return in
			}
		}
	}
	t.Fatalf("no db-manager info as wanted: %+v", last)
	return svcinfo.Info{}
}

// TestInfoShowsFailedPublication: while the object store refuses the
// model's objects, the db-manager's info shows the paused publication as
// its last error, and the position of the applied request; once the store
// is back the version is published.
func TestInfoShowsFailedPublication(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "unpublished"}).ID
	run(t, s, m, nil)
	if n := s.SubmitWait(t, createTable(m, "create"), time.Minute); n.Status != model.StatusApplied {
		t.Fatalf("create_table: %+v", n)
	}
	before := dbmanagerInfo(t, s, func(in svcinfo.Info) bool { return in.Position > 0 })
	if !slices.Equal(before.Models, []string{m}) || before.Metadata["model"] != m || before.LastError != nil {
		t.Fatalf("info %+v: want model %s and no error", before, m)
	}

	// A regular file where the model's objects go: every Put fails
	// (ENOTDIR), for root too.
	dir := filepath.Join(s.StoreDir, "models", m)
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.Submit(t, appendRow(m, "a-1", 1))
	failed := dbmanagerInfo(t, s, func(in svcinfo.Info) bool { return in.LastError != nil })
	if !strings.Contains(failed.LastError.Error, "publication") || failed.Position <= before.Position || failed.LastError.Time.Before(before.Started) {
		t.Errorf("info %+v (last error %+v): want the paused publication after the applied request", failed, failed.LastError)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	if n := s.Outcomes(t, m, time.Minute, "a-1")["a-1"]; n.Status != model.StatusApplied || n.Version != 2 {
		t.Errorf("after the store is back: %+v, want applied in version 2", n)
	}
}

// TestInfoShowsLag: while the applier is held after a commit, the
// requests submitted meanwhile show as the consumer's lag (num_pending)
// and the position stays; once it goes on, the lag is 0 and the position
// is the last request's.
func TestInfoShowsLag(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "lagging"}).ID
	var hold atomic.Bool
	release := make(chan struct{})
	cfg := testConfig(s, m)
	cfg.BatchSize = 1 // the consumer then buffers at most 2 deliveries
	runConfig(t, s, cfg, func(mgr *dbmanager.Manager) {
		mgr.SetCrashAfterCommit(func() bool {
			if hold.Load() {
				<-release
			}
			return false
		})
	})
	if n := s.SubmitWait(t, createTable(m, "create"), time.Minute); n.Status != model.StatusApplied {
		t.Fatalf("create_table: %+v", n)
	}
	hold.Store(true)
	ids := stacktest.IDs("a", 10)
	for i, id := range ids {
		s.Submit(t, appendRow(m, id, i))
	}
	held := dbmanagerInfo(t, s, func(in svcinfo.Info) bool { return in.Lag != nil && *in.Lag >= 5 })
	if *held.Lag > 10 {
		t.Errorf("lag %d with 10 requests submitted", *held.Lag)
	}
	close(release)
	s.Outcomes(t, m, time.Minute, ids...)
	done := dbmanagerInfo(t, s, func(in svcinfo.Info) bool { return in.Lag != nil && *in.Lag == 0 && in.Position > held.Position })
	if done.Position != held.Position+uint64(len(ids))-1 {
		t.Errorf("position %d after the held one %d and %d more requests", done.Position, held.Position, len(ids)-1)
	}
}
