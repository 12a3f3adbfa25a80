package dbmanager_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// TestCancelSurvivesKill9: a real db-manager process is killed with
// SIGKILL the moment it logs that it skips a cancelled request (the
// decision made, its commit perhaps not); its successor decides again
// from the file and the bucket: the request is cancelled exactly once and
// never applied, the rest of the batch applied once.
func TestCancelSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dbmanager binary")
	}
	bin := filepath.Join(t.TempDir(), "dbmanager")
	build := exec.Command("go", "build", "-o", bin, "github.com/teatree/teatree/cmd/dbmanager")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build dbmanager: %v", err)
	}
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "cancel-kill"}).ID
	s.Submit(t, createTable(m, "create"), appendRow(m, "a-1", 1), appendRow(m, "a-2", 2))
	cancel(t, s, m, "a-1")

	cmd := exec.Command(bin, "--model", m, "--data-dir", s.DataDir, "--duckdb-threads", "1", "--duckdb-memory-limit", "256MB")
	cmd.Env = []string{"TEATREE_NATS_URL=" + s.NATSURL, "TEATREE_POSTGRES_URL=" + s.PostgresURL, "TEATREE_STORE_URL=" + s.StoreDir, "HOME=" + t.TempDir()}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "request cancelled") {
				cmd.Process.Signal(syscall.SIGKILL)
				killed <- true
				for sc.Scan() {
				}
				return
			}
		}
		killed <- false
	}()
	select {
	case ok := <-killed:
		if !ok {
			t.Fatal("the db-manager ended without deciding the cancel")
		}
	case <-time.After(wait):
		cmd.Process.Kill()
		t.Fatal("the db-manager did not decide the cancel")
	}
	cmd.Wait()

	run(t, s, m, nil) // waits for the lease the killed process held to expire
	got := s.Outcomes(t, m, wait, "create", "a-1", "a-2")
	if got["a-1"].Status != model.StatusCancelled || got["a-2"].Status != model.StatusApplied {
		t.Fatalf("a-1 %s, a-2 %s; want cancelled, applied", got["a-1"].Status, got["a-2"].Status)
	}
	time.Sleep(200 * time.Millisecond)
	count := map[string]int{}
	for _, n := range s.AllNotifications(t, m) {
		count[n.RequestID+"/"+string(n.Status)]++
	}
	if count["a-1/cancelled"] != 1 || count["a-1/applied"] != 0 || count["a-2/applied"] != 1 {
		t.Errorf("notifications %v", count)
	}
	if r := rowsOf(t, s, m); len(r) != 1 || r[0] != 2 {
		t.Errorf("rows %v, want [2]", r)
	}
}
