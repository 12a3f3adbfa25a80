package stacktest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// BuildBinaries builds the teatree commands named in cmds (e.g.
// "dispatcher", the packages under cmd/) and the nats-server of go.mod
// into a new temporary directory, and returns it; the caller removes it.
// Build output goes to stderr; the error names the harness (e.g. "e2e").
func BuildBinaries(harness string, cmds ...string) (string, error) {
	dir, err := os.MkdirTemp("", "teatree-"+harness+"-bin-")
	if err != nil {
		return "", fmt.Errorf("%s: build binaries: %w", harness, err)
	}
	pkgs := []string{"build", "-o", dir + "/"}
	for _, c := range cmds {
		pkgs = append(pkgs, "github.com/teatree/teatree/cmd/"+c)
	}
	for _, args := range [][]string{
		pkgs,
		// The NATS server of go.mod as its own process.
		{"build", "-o", dir + "/nats-server", "github.com/nats-io/nats-server/v2"},
	} {
		build := exec.Command("go", args...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%s: build binaries: %w", harness, err)
		}
	}
	return dir, nil
}

// MainWithBinaries is a harness's TestMain: it builds the commands cmds
// and nats-server (BuildBinaries), sets *bin to their directory, runs the
// tests, removes the directory and exits with the tests' code; a failed
// build exits 1 with one line on stderr.
func MainWithBinaries(m *testing.M, bin *string, harness string, cmds ...string) {
	dir, err := BuildBinaries(harness, cmds...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
