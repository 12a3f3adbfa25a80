// Package udftest builds WebAssembly modules for tests: the examples of
// udf/examples and the hostile modules of udf/testdata/hostile, with the
// standard Go toolchain (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared),
// so that no .wasm binary is committed.
package udftest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Examples are the example modules, by name (the directory under
// udf/examples).
var Examples = []string{"greatcircle", "filter", "flatmap", "delayclass"}

// Hostile are the hostile modules, by name (under udf/testdata/hostile).
var Hostile = []string{"loop", "alloc", "oob", "schema", "wasifile"}

// Build builds the named modules (an entry of Examples or Hostile) into
// dir as <name>.wasm and returns their paths by name. It needs the go
// command (the one that runs the test); errors carry its output.
func Build(dir string, names ...string) (map[string]string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	paths := map[string]string{}
	for _, n := range names {
		pkg := "./udf/examples/" + n
		for _, h := range Hostile {
			if h == n {
				pkg = "./udf/testdata/hostile/" + n
			}
		}
		out := filepath.Join(dir, n+".wasm")
		cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("udftest: GOOS=wasip1 GOARCH=wasm go build %s: %v: %s", pkg, err, strings.TrimSpace(string(b)))
		}
		paths[n] = out
	}
	return paths, nil
}

// repoRoot is the directory of go.mod above this package's source.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("udftest: no caller")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir is where tests keep wazero's compilation cache across runs:
// $TEATREE_WASM_CACHE, else teatree-wazero under the user's cache
// directory, else "" (in memory).
func CacheDir() string {
	if d := os.Getenv("TEATREE_WASM_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "teatree-wazero")
}
