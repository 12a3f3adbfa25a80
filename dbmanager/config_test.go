package dbmanager

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/retention"
)

// TestConfigWithDefaults: WithDefaults fills every unset field with its
// exported default and keeps what is set (a negative CompactFree, which
// means never, included); Validate fills in nothing, so a Config that
// skipped WithDefaults is refused.
func TestConfigWithDefaults(t *testing.T) {
	got := Config{Model: "m", Holder: "h"}.WithDefaults()
	want := Config{
		Model: "m", Holder: "h",
		DataDir:         DefaultDataDir,
		Threads:         DefaultThreads,
		MemoryLimit:     DefaultMemoryLimit,
		BatchSize:       DefaultBatchSize,
		AckWait:         DefaultAckWait,
		LeasePoll:       DefaultLeasePoll,
		GCInterval:      DefaultGCInterval,
		BlockGrace:      retention.DefaultGrace,
		CompactFree:     DefaultCompactFree,
		CompactMinBytes: DefaultCompactMinBytes,
		BlockSize:       DefaultBlockSize,
		Profiles:        DefaultProfiles,
		WasmMemoryMiB:   DefaultWasmMemoryMiB,
		WasmTimeout:     DefaultWasmTimeout,
		WasmCacheDir:    DefaultDataDir + "/wasm-cache",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate after WithDefaults: %v", err)
	}
	if h := (Config{}).WithDefaults().Holder; !strings.Contains(h, ":") {
		t.Errorf("default holder %q, want host:pid", h)
	}

	set := Config{Model: "m", Holder: "h", DataDir: "d", Threads: 3, MemoryLimit: "3GB", BatchSize: 7,
		AckWait: time.Minute, LeasePoll: time.Millisecond, GCInterval: 4, BlockGrace: time.Hour, CompactFree: -1,
		CompactMinBytes: 5, BlockSize: 16 << 10, Profiles: "off", WasmMemoryMiB: 64, WasmTimeout: time.Second, WasmCacheDir: "c"}
	if diff := cmp.Diff(set, set.WithDefaults()); diff != "" {
		t.Errorf("WithDefaults changed set fields (-want +got):\n%s", diff)
	}

	err := Config{Model: "m"}.Validate()
	if err == nil {
		t.Fatal("Validate of a Config without defaults: no error")
	}
	for _, flag := range []string{"--data-dir", "--duckdb-threads", "--batch-size", "--block-size", "--profiles"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate without defaults: %v; want it to name %s", err, flag)
		}
	}
}
