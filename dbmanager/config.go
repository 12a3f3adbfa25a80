package dbmanager

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/retention"
)

// Config configures one db-manager. Each field's default is an exported
// constant named after it (DefaultThreads for Threads, …), written next to
// it; WithDefaults fills the zero fields with them and Validate only
// checks. The flags and environment variables named below are registered
// by the dbmanager binary (internal/app), with the same defaults.
type Config struct {
	Model       string        // model id; required ($TEATREE_MODEL)
	DataDir     string        // the model's files live in DataDir/<model>/; default DefaultDataDir, ./data ($TEATREE_DATA_DIR)
	Threads     int           // DuckDB threads; default DefaultThreads, 2 ($TEATREE_DUCKDB_THREADS)
	MemoryLimit string        // DuckDB memory_limit; default DefaultMemoryLimit, 1GB ($TEATREE_DUCKDB_MEMORY_LIMIT)
	BatchSize   int           // most requests applied in one transaction; default DefaultBatchSize, 1000 ($TEATREE_BATCH_SIZE)
	AckWait     time.Duration // JetStream ack wait of the model's consumer; default DefaultAckWait, 5m
	LeasePoll   time.Duration // how often a waiting db-manager retries the lease; default DefaultLeasePoll, 1s
	Holder      string        // lease holder name; default host:pid
	GCInterval  int           // run retention after every N-th published version; default DefaultGCInterval, 1
	BlockGrace  time.Duration // keep unreferenced snapshot blocks this long; default retention.DefaultGrace, 1h ($TEATREE_BLOCK_GRACE)
	HealthAddr  string        // address of the /livez and /readyz endpoints; "" = none ($TEATREE_HEALTH_ADDR)
	// A cut compacts the live file first (a version marked compaction)
	// when at least CompactFree of its blocks are free and they are at
	// least CompactMinBytes; default DefaultCompactFree, 0.5
	// ($TEATREE_COMPACT_FREE; negative: never) and DefaultCompactMinBytes,
	// 64 MiB ($TEATREE_COMPACT_MIN_BYTES).
	CompactFree     float64
	CompactMinBytes int64
	// BlockSize is the DuckDB block size in bytes of a new live file and
	// of a compaction's copy: what a small version costs (a few blocks)
	// against the objects of a full upload; a power of two from
	// blocks.MinBlockSize to blocks.MaxBlockSize; default
	// DefaultBlockSize, 64 KiB ($TEATREE_BLOCK_SIZE; docs/decisions.md has
	// the measurements).
	BlockSize int
	// Postgres sources append may read (args.source), name → DSN; see
	// sources.go. New adds those of SourcesFile ($TEATREE_SOURCES;
	// default none) and of the environment (TEATREE_SOURCE_<NAME>); an
	// entry already in Sources wins, then the environment, then the file.
	Sources     map[string]string
	SourcesFile string
	// Profiles is "on" (every data file written gets its column profile,
	// snapshot.ProfileKey; teactl profile reads them) or "off" (none: for
	// measuring their cost, or a model whose profiles nobody reads);
	// default DefaultProfiles, on ($TEATREE_PROFILES).
	Profiles string
	// WebAssembly user functions (register_module, wasm; docs/wasm.md):
	// WasmMemoryMiB caps the memory of each module instance, default
	// DefaultWasmMemoryMiB, 256 MiB ($TEATREE_WASM_MEMORY_MIB; at most
	// 4096); WasmTimeout caps the time one request spends in its module,
	// default DefaultWasmTimeout, 60s ($TEATREE_WASM_TIMEOUT). The
	// db-manager runs one model, so these are settable per model.
	WasmMemoryMiB int
	WasmTimeout   time.Duration
	// WasmCacheDir keeps wazero's compiled code across restarts (a
	// module of 14 MB takes tens of seconds to compile); default
	// DataDir/wasm-cache, shared by the node's models ($TEATREE_WASM_CACHE).
	WasmCacheDir string
	// KeepStaged leaves the staged payloads of applied requests in the
	// object store after their version is published, so that teactl model
	// verify can replay them; the dispatcher's staging sweep deletes them
	// once they are older than its grace (24 h). Default false: deleted at
	// publication ($TEATREE_KEEP_STAGED).
	KeepStaged bool
}

// The defaults of Config, one per field; see each field.
const (
	DefaultDataDir         = "data"
	DefaultThreads         = 2
	DefaultMemoryLimit     = "1GB"
	DefaultBatchSize       = 1000
	DefaultAckWait         = 5 * time.Minute
	DefaultLeasePoll       = time.Second
	DefaultGCInterval      = 1
	DefaultCompactFree     = 0.5
	DefaultCompactMinBytes = 64 << 20
	DefaultBlockSize       = 64 << 10
	DefaultProfiles        = "on"
	DefaultWasmMemoryMiB   = 256
	DefaultWasmTimeout     = 60 * time.Second
)

// WithDefaults returns a copy of c whose unset fields hold their
// defaults: zero ones, and zero or negative ones for the counts and
// durations (CompactFree only when zero: negative means never). Holder
// defaults to "<hostname>:<pid>".
func (c Config) WithDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Threads <= 0 {
		c.Threads = DefaultThreads
	}
	if c.MemoryLimit == "" {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.LeasePoll <= 0 {
		c.LeasePoll = DefaultLeasePoll
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.GCInterval <= 0 {
		c.GCInterval = DefaultGCInterval
	}
	if c.BlockGrace <= 0 {
		c.BlockGrace = retention.DefaultGrace
	}
	if c.CompactFree == 0 {
		c.CompactFree = DefaultCompactFree
	}
	if c.CompactMinBytes <= 0 {
		c.CompactMinBytes = DefaultCompactMinBytes
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.Profiles == "" {
		c.Profiles = DefaultProfiles
	}
	if c.WasmMemoryMiB <= 0 {
		c.WasmMemoryMiB = DefaultWasmMemoryMiB
	}
	if c.WasmTimeout <= 0 {
		c.WasmTimeout = DefaultWasmTimeout
	}
	if c.WasmCacheDir == "" {
		c.WasmCacheDir = filepath.Join(c.DataDir, "wasm-cache")
	}
	return c
}

// Validate checks c; it fills in nothing (call WithDefaults first). It
// returns every problem at once, each naming its flag.
func (c Config) Validate() error {
	var errs []error
	if err := model.ValidateID(c.Model); err != nil {
		errs = append(errs, fmt.Errorf("--model: %w", err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: empty"))
	}
	if c.Threads <= 0 {
		errs = append(errs, fmt.Errorf("--duckdb-threads %d: want at least 1", c.Threads))
	}
	if c.BatchSize <= 0 {
		errs = append(errs, fmt.Errorf("--batch-size %d: want at least 1", c.BatchSize))
	}
	if c.WasmMemoryMiB > 4096 {
		errs = append(errs, fmt.Errorf("--wasm-memory-mib %d: at most 4096 (a 32-bit module's 4 GiB)", c.WasmMemoryMiB))
	}
	if c.AckWait <= 0 || c.LeasePoll <= 0 || c.GCInterval <= 0 || c.BlockGrace <= 0 || c.CompactMinBytes <= 0 || c.Holder == "" {
		errs = append(errs, errors.New("AckWait, LeasePoll, GCInterval, BlockGrace, CompactMinBytes and Holder must be set (Config.WithDefaults)"))
	}
	if c.BlockSize < blocks.MinBlockSize || c.BlockSize > blocks.MaxBlockSize || c.BlockSize&(c.BlockSize-1) != 0 {
		errs = append(errs, fmt.Errorf("--block-size %d: want a power of two from %d to %d", c.BlockSize, blocks.MinBlockSize, blocks.MaxBlockSize))
	}
	switch c.Profiles {
	case "on", "off":
	default:
		errs = append(errs, fmt.Errorf("--profiles %q: want on or off", c.Profiles))
	}
	return errors.Join(errs...)
}

// dir is the model's directory; the DuckDB file, the staged payloads being
// applied and the snapshots being published live below it.
func (c *Config) dir() string         { return filepath.Join(c.DataDir, c.Model) }
func (c *Config) dbPath() string      { return filepath.Join(c.dir(), c.Model+".duckdb") }
func (c *Config) stagingDir() string  { return filepath.Join(c.dir(), "staging") }
func (c *Config) versionsDir() string { return filepath.Join(c.dir(), "versions") }
