package kubetest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCacheDirMatchesScript: the directory the harness looks in without
// TEATREE_K8S_BIN_DIR is the one scripts/k8s-test-bins.sh builds into.
func TestCacheDirMatchesScript(t *testing.T) {
	t.Setenv("TEATREE_CACHE", t.TempDir())
	out, err := exec.Command("../../scripts/k8s-test-bins.sh", "--path").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != dir {
		t.Errorf("scripts/k8s-test-bins.sh --path = %s, harness looks in %s", got, dir)
	}
}

// TestBinDirVariable: a variable naming a directory without the binaries
// is an error, not a skip; without the variable and binaries, BinDir is "".
func TestBinDirVariable(t *testing.T) {
	t.Setenv(EnvVar, t.TempDir())
	if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), "scripts/k8s-test-bins.sh") {
		t.Errorf("BinDir with an empty directory = %v, want an error naming the script", err)
	}
	t.Setenv(EnvVar, "")
	t.Setenv("TEATREE_CACHE", t.TempDir())
	if dir, err := BinDir(); dir != "" || err != nil {
		t.Errorf("BinDir with nothing built = %q, %v, want \"\", nil", dir, err)
	}
}
