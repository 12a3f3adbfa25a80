package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/teatree/teatree/internal/app"
)

// Environment variables the benchmark passes to its db-managers.
const (
	// envProfile names a directory for CPU and heap profiles.
	envProfile = "TEABENCH_PROFILE_DIR"
	// envLowMemory is the memory_limit of models named lowmem-*.
	envLowMemory = "TEABENCH_LOW_MEMORY_LIMIT"
	// lowMemPrefix marks the models of the low-memory ingest run.
	lowMemPrefix = "lowmem-"
	// noProfilesPrefix marks the models whose db-managers write no column
	// profiles (TEATREE_PROFILES=off; scenario 2p).
	noProfilesPrefix = "noprof-"
)

// DBManager runs a db-manager exactly as the dbmanager binary does
// (app.DBManager), with three benchmark hooks: models named lowmem-* get
// the memory_limit in $TEABENCH_LOW_MEMORY_LIMIT, models named noprof-*
// TEATREE_PROFILES=off, and with $TEABENCH_PROFILE_DIR set the process
// writes a CPU profile and, at exit, a heap profile there
// (dbmanager-<model>-<pid>.{cpu,heap}.pprof).
func DBManager(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	m := modelArg(args)
	env := getenv
	if lim := getenv(envLowMemory); lim != "" && strings.HasPrefix(m, lowMemPrefix) {
		env = func(k string) string {
			if k == "TEATREE_DUCKDB_MEMORY_LIMIT" {
				return lim
			}
			return getenv(k)
		}
	}
	if strings.HasPrefix(m, noProfilesPrefix) {
		inner := env
		env = func(k string) string {
			if k == "TEATREE_PROFILES" {
				return "off"
			}
			return inner(k)
		}
	}
	dir := getenv(envProfile)
	if dir == "" {
		return app.DBManager(ctx, args, env, stderr)
	}
	base := filepath.Join(dir, fmt.Sprintf("dbmanager-%s-%d", m, os.Getpid()))
	stop, err := startCPUProfile(base + ".cpu.pprof")
	if err != nil {
		return err
	}
	err = app.DBManager(ctx, args, env, stderr)
	stop()
	if herr := writeHeapProfile(base + ".heap.pprof"); err == nil {
		err = herr
	}
	return err
}

// modelArg returns the value of --model in args ("" if absent).
func modelArg(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--model="); ok {
			return v
		}
		if a == "--model" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// startCPUProfile starts a CPU profile written to path; the returned
// function stops it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the allocation profile (alloc_space and
// inuse_space) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: heap profile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return fmt.Errorf("bench: heap profile: %w", err)
	}
	return nil
}
