package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/stacktest"
)

// bin holds the binaries built by TestMain.
var bin string

func TestMain(m *testing.M) {
	stacktest.MainWithBinaries(m, &bin, "e2e", "teactl", "dispatcher", "dbmanager")
}

// cleanEnv is the environment without TEATREE_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TEATREE_") {
			out = append(out, kv)
		}
	}
	return out
}

// devStack is a running `teactl dev`.
type devStack struct {
	cmd  *exec.Cmd
	dir  string
	env  []string // the TEATREE_* variables from DIR/env
	logs *bytes.Buffer
	done chan error
}

// startDev starts `teactl dev --dir dir` and waits for DIR/env.
func startDev(t *testing.T, dir string, extra ...string) *devStack {
	t.Helper()
	return startDevEnv(t, dir, nil, extra...)
}

// startDevEnv is startDev with env (KEY=value) added to teactl dev's
// environment, which its db-managers inherit.
func startDevEnv(t *testing.T, dir string, env []string, extra ...string) *devStack {
	t.Helper()
	os.Remove(filepath.Join(dir, "env"))
	args := append([]string{"dev", "--dir", dir, "--nats-port", "0", "--idle-timeout", "3s"}, extra...)
	cmd := exec.Command(filepath.Join(bin, "teactl"), args...)
	cmd.Env = append(cleanEnv(), env...)
	d := &devStack{cmd: cmd, dir: dir, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			d.stop(t)
		}
		if t.Failed() {
			t.Logf("teactl dev output:\n%s", d.logs.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "env"))
		if err == nil && bytes.Contains(data, []byte("TEATREE_STORE_URL")) {
			d.env = parseEnvFile(t, data)
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("teactl dev exited: %v\n%s", err, d.logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("teactl dev did not write %s/env\n%s", dir, d.logs.String())
		}
	}
}

func parseEnvFile(t *testing.T, data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimPrefix(sc.Text(), "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out = append(out, k+"="+strings.Trim(v, "'"))
	}
	return out
}

// stop sends Ctrl-C and waits for a clean exit.
func (d *devStack) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("teactl dev exited with %v after Ctrl-C\n%s", err, d.logs.String())
		}
	case <-time.After(90 * time.Second):
		d.cmd.Process.Kill()
		t.Fatalf("teactl dev did not stop after Ctrl-C\n%s", d.logs.String())
	}
}

// teactl runs a teactl command against the stack and returns its stdout,
// stderr and exit code.
func (d *devStack) teactl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runTeactl(t, 3*time.Minute, d.env, args...)
}

// runTeactl runs the teactl binary with env added to a clean environment
// and returns its stdout, stderr and exit code.
func runTeactl(t *testing.T, timeout time.Duration, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "teactl"), args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// must runs teactl and fails the test unless it exits 0.
func (d *devStack) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := d.teactl(t, args...)
	if code != 0 {
		t.Fatalf("teactl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// stackDir returns a new directory for a stack's data that other users
// can enter: PostgreSQL runs as the postgres user when the tests run as
// root, and t.TempDir's parents are private.
func stackDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "teatree-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
