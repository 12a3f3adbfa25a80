//go:build linux

package blocks_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/teatree/teatree/blocks"
)

// lockedByOther reports, from a child process, whether some process holds
// a POSIX lock on path (F_GETLK sees only other processes' locks).
func lockedByOther(t *testing.T, path string) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockProbeChild$")
	cmd.Env = append(os.Environ(), "BLOCKS_LOCK_PROBE="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	return strings.Contains(string(out), "LOCKED")
}

func TestLockProbeChild(t *testing.T) {
	path := os.Getenv("BLOCKS_LOCK_PROBE")
	if path == "" {
		t.Skip("helper process")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &fl); err != nil {
		t.Fatal(err)
	}
	if fl.Type != unix.F_UNLCK {
		os.Stdout.WriteString("LOCKED\n")
	}
}

// TestMapKeepsDuckDBLock: DuckDB locks its file with fcntl F_SETLK, a lock
// of the process that closing any descriptor of the file releases. Mapping
// and capturing the live file through a descriptor held open keep it.
func TestMapKeepsDuckDBLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLive(t, dir).withRows(1000)
	if !lockedByOther(t, l.path) {
		t.Fatal("DuckDB holds no lock on its open file")
	}
	m, _, err := blocks.RemapFile(ctx, l.fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.appendRow()
	c, err := blocks.NewCapture(ctx, l.fd, m, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !lockedByOther(t, l.path) {
		t.Fatal("mapping the live file released DuckDB's lock on it")
	}
	// What RemapFile avoids: Remap by path opens and closes a descriptor.
	if _, _, err := blocks.Remap(ctx, l.path, m); err != nil {
		t.Fatal(err)
	}
	if lockedByOther(t, l.path) {
		t.Log("DuckDB's lock survived a close of another descriptor: the caution in RemapFile is not needed on this system")
	}
}
