package dbmanager_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// tmpfs mounts a tmpfs of size bytes at a new directory, or skips the test
// when mounting is not permitted (not root, no CAP_SYS_ADMIN).
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the disk-full test (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestDiskFullRecovers fills the data volume while the db-manager applies
// and snapshots: it must not publish a partial version, and once space is
// back it must recover (restarted, as the dispatcher restarts it) and
// apply every request exactly once.
func TestDiskFullRecovers(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	s.DataDir = tmpfs(t, "6m")
	m := s.CreateModel(t, controldb.Model{ID: "full"}).ID
	s.Submit(t, createTable(m, "create"))
	const n = 12
	big := strings.Repeat("x", 200_000)
	for i := range n {
		rows := make([]map[string]any, 3)
		for j := range rows {
			rows[j] = map[string]any{"n": i*10 + j, "v": fmt.Sprint(i, j, big)}
		}
		s.Submit(t, stacktest.Request(m, fmt.Sprintf("a-%d", i), "append", map[string]any{"table": "t", "rows": rows}))
	}

	// Run the db-manager like the dispatcher does: restart it when it
	// exits. After a few failures, give the volume room.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var exits atomic.Int32
	var grown atomic.Bool
	grow := func() {
		if grown.CompareAndSwap(false, true) {
			if out, err := exec.Command("mount", "-o", "remount,size=512m", s.DataDir).CombinedOutput(); err != nil {
				t.Errorf("remount: %v %s", err, out)
			}
		}
	}
	var logs stacktest.SyncBuffer
	full := func() bool {
		return exits.Load() > 0 || strings.Contains(strings.ToLower(logs.String()), "no space left")
	}
	setLog := logTo(t, &logs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			h := run(t, s, m, setLog)
			select {
			case <-ctx.Done():
				return
			case h.err = <-h.done:
				h.ended.Store(true)
			}
			t.Logf("db-manager exited: %v", h.err)
			if exits.Add(1) >= 2 {
				grow()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// A db-manager that keeps retrying instead of exiting also recovers:
	// once it has met the full volume (or after a minute in any case),
	// give the volume room.
	go func() {
		for deadline := time.Now().Add(time.Minute); !full() && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		grow()
	}()
	got := s.Outcomes(t, m, 2*time.Minute, append([]string{"create"}, stacktest.IDs("a", n)...)...)
	cancel()
	<-done
	for id, nt := range got {
		if nt.Status != model.StatusApplied {
			t.Errorf("%s: %s %s", id, nt.Status, nt.Error)
		}
	}
	if !full() {
		t.Fatal("the volume never filled up (no exit, no \"no space left\" logged): the test proves nothing")
	}
	// Every recorded version has its objects, and the latest holds every
	// row once.
	vs, err := s.Ctl.ListVersions(context.Background(), m, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v.Version != int64(i+1) {
			t.Fatalf("versions not contiguous: %d at %d", v.Version, i)
		}
		if v.Expired == nil {
			if _, err := s.Store.Stat(context.Background(), v.SnapshotURI); err != nil {
				t.Errorf("version %d recorded without its snapshot: %v", v.Version, err)
			}
		}
	}
	db, _ := latest(t, s, m)
	var count, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT n) FROM t").Scan(&count, &distinct); err != nil {
		t.Fatal(err)
	}
	if count != 3*n || distinct != 3*n {
		t.Fatalf("%d rows (%d distinct), want %d", count, distinct, 3*n)
	}
}
