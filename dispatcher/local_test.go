package dispatcher

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the child process: TEATREE_TEST_CHILD says
// how to behave, and the child appends a line to TEATREE_TEST_LOG per start.
func TestMain(m *testing.M) {
	if mode := os.Getenv("TEATREE_TEST_CHILD"); mode != "" {
		f, _ := os.OpenFile(os.Getenv("TEATREE_TEST_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		f.WriteString(mode + " " + strings.Join(os.Args[1:], " ") + "\n")
		f.Close()
		switch mode {
		case "crash":
			os.Exit(3)
		case "serve":
			time.Sleep(time.Hour) // until SIGTERM (default action: exit)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startsIn(t *testing.T, path string) int {
	data, _ := os.ReadFile(path)
	return strings.Count(string(data), "\n")
}

func TestLocalRunnerRestartsCrashedChild(t *testing.T) {
	logf := filepath.Join(t.TempDir(), "starts")
	r := &LocalRunner{Command: []string{os.Args[0], "-test.run=^$"}, Env: []string{"TEATREE_TEST_CHILD=crash", "TEATREE_TEST_LOG=" + logf},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer r.Close()
	if err := r.Ensure(context.Background(), "m"); err != nil {
		t.Fatal(err)
	}
	// Backoff: 1 s, then ~2 s: three starts take a few seconds, not zero.
	deadline := time.Now().Add(20 * time.Second)
	for startsIn(t, logf) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := startsIn(t, logf); n < 3 {
		t.Fatalf("crashed child started %d times, want restarts", n)
	}
	data, _ := os.ReadFile(logf)
	if !strings.Contains(string(data), "--model m") {
		t.Errorf("child args %q do not name the model", data)
	}
	if got, _ := r.Running(context.Background()); len(got) != 1 || got[0] != "m" {
		t.Errorf("Running = %v while restarting", got)
	}
}

func TestLocalRunnerStopsChild(t *testing.T) {
	logf := filepath.Join(t.TempDir(), "starts")
	r := &LocalRunner{Command: []string{os.Args[0], "-test.run=^$"}, Env: []string{"TEATREE_TEST_CHILD=serve", "TEATREE_TEST_LOG=" + logf},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Grace: 5 * time.Second}
	defer r.Close()
	r.Ensure(context.Background(), "a")
	r.Ensure(context.Background(), "a") // no second child
	r.Ensure(context.Background(), "b")
	for startsIn(t, logf) < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Running(context.Background()); len(got) != 1 || got[0] != "b" {
		t.Errorf("Running after stopping a = %v, want [b]", got)
	}
	time.Sleep(200 * time.Millisecond)
	if n := startsIn(t, logf); n != 2 {
		t.Errorf("%d starts, want 2 (a once, b once; a not restarted after Stop)", n)
	}
}
