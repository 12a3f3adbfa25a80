package dbmanager

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/retention"
)

// Config configures one db-manager. Defaults are written next to each field.
type Config struct {
	Model       string        // model id; required ($TEATREE_MODEL)
	DataDir     string        // the model's files live in DataDir/<model>/; default ./data ($TEATREE_DATA_DIR)
	Threads     int           // DuckDB threads; default 2 ($TEATREE_DUCKDB_THREADS)
	MemoryLimit string        // DuckDB memory_limit; default 1GB ($TEATREE_DUCKDB_MEMORY_LIMIT)
	BatchSize   int           // most requests applied in one transaction; default 1000
	AckWait     time.Duration // JetStream ack wait of the model's consumer; default 5m
	LeasePoll   time.Duration // how often a waiting db-manager retries the lease; default 1s
	Holder      string        // lease holder name; default host:pid
	GCInterval  int           // run retention after every N-th published version; default 1
	BlockGrace  time.Duration // keep unreferenced snapshot blocks this long; default retention.DefaultGrace, 1h ($TEATREE_BLOCK_GRACE)
	HealthAddr  string        // address of the /livez and /readyz endpoints; "" = none ($TEATREE_HEALTH_ADDR)
	// A cut compacts the live file first (a version marked compaction)
	// when at least CompactFree of its blocks are free and they are at
	// least CompactMinBytes; default 0.5 ($TEATREE_COMPACT_FREE; negative:
	// never) and 64 MiB ($TEATREE_COMPACT_MIN_BYTES).
	CompactFree     float64
	CompactMinBytes int64
	// BlockSize is the DuckDB block size in bytes of a new live file and
	// of a compaction's copy: what a small version costs (a few blocks)
	// against the objects of a full upload; default 64 KiB
	// ($TEATREE_BLOCK_SIZE; docs/decisions.md has the measurements).
	BlockSize int
	// Postgres sources append may read (args.source), name → DSN; see
	// sources.go. Validate adds those of SourcesFile ($TEATREE_SOURCES;
	// default none) and of the environment (TEATREE_SOURCE_<NAME>); an
	// entry already in Sources wins, then the environment, then the file.
	Sources     map[string]string
	SourcesFile string
	// Profiles is "on" (every data file written gets its column profile,
	// snapshot.ProfileKey; teactl profile reads them) or "off" (none: for
	// measuring their cost, or a model whose profiles nobody reads);
	// default on ($TEATREE_PROFILES).
	Profiles string
}

// Defaults of Config.CompactFree, CompactMinBytes and BlockSize.
const (
	DefaultCompactFree     = 0.5
	DefaultCompactMinBytes = 64 << 20
	DefaultBlockSize       = 64 << 10
)

// RegisterFlags registers the flags of Config on s.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Model, "model", "TEATREE_MODEL", "", "model id")
	s.String(&c.DataDir, "data-dir", "TEATREE_DATA_DIR", "data", "directory for model DuckDB files")
	s.Int(&c.Threads, "duckdb-threads", "TEATREE_DUCKDB_THREADS", 2, "DuckDB threads")
	s.String(&c.MemoryLimit, "duckdb-memory-limit", "TEATREE_DUCKDB_MEMORY_LIMIT", "1GB", "DuckDB memory_limit")
	s.String(&c.HealthAddr, "health-addr", "TEATREE_HEALTH_ADDR", "", "serve /livez and /readyz on this address (e.g. :8080)")
	s.Int(&c.BatchSize, "batch-size", "TEATREE_BATCH_SIZE", 1000, "most requests applied in one DuckDB transaction")
	s.Float64(&c.CompactFree, "compact-free", "TEATREE_COMPACT_FREE", DefaultCompactFree, "compact the live file at a cut when this fraction of its blocks is free (and at least --compact-min-bytes); negative: never")
	s.Int(&c.BlockSize, "block-size", "TEATREE_BLOCK_SIZE", DefaultBlockSize, "DuckDB block size in bytes of a new live file and of a compaction (16384 to 262144, a power of two)")
	s.Int64(&c.CompactMinBytes, "compact-min-bytes", "TEATREE_COMPACT_MIN_BYTES", DefaultCompactMinBytes, "compact only when the free blocks are at least this many bytes")
	s.String(&c.SourcesFile, "sources", "TEATREE_SOURCES", "", "file of Postgres sources for append (name=postgres://… per line, or model/name=… for this model only; or a JSON object); TEATREE_SOURCE_<NAME>=postgres://… adds one")
	s.String(&c.Profiles, "profiles", "TEATREE_PROFILES", "on", "column profiles of the data files written: on or off")
	s.Duration(&c.BlockGrace, "block-grace", "TEATREE_BLOCK_GRACE", retention.DefaultGrace, "keep snapshot blocks no retained version uses this long after upload and expiry (readers may be pulling)")
}

// Validate fills defaults and checks c.
func (c *Config) Validate() error {
	var errs []error
	if err := model.ValidateID(c.Model); err != nil {
		errs = append(errs, fmt.Errorf("--model: %w", err))
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("--data-dir: %w", err))
	}
	c.DataDir = abs
	if c.Threads <= 0 {
		c.Threads = 2
	}
	if c.MemoryLimit == "" {
		c.MemoryLimit = "1GB"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.AckWait <= 0 {
		c.AckWait = 5 * time.Minute
	}
	if c.LeasePoll <= 0 {
		c.LeasePoll = time.Second
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.CompactFree == 0 {
		c.CompactFree = DefaultCompactFree
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.BlockSize < blocks.MinBlockSize || c.BlockSize > blocks.MaxBlockSize || c.BlockSize&(c.BlockSize-1) != 0 {
		errs = append(errs, fmt.Errorf("--block-size %d: want a power of two from %d to %d", c.BlockSize, blocks.MinBlockSize, blocks.MaxBlockSize))
	}
	if c.CompactMinBytes <= 0 {
		c.CompactMinBytes = DefaultCompactMinBytes
	}
	switch c.Profiles {
	case "":
		c.Profiles = "on"
	case "on", "off":
	default:
		errs = append(errs, fmt.Errorf("--profiles %q: want on or off", c.Profiles))
	}
	if c.GCInterval <= 0 {
		c.GCInterval = 1
	}
	if c.BlockGrace <= 0 {
		c.BlockGrace = retention.DefaultGrace
	}
	if err := c.loadSources(os.Environ()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dir is the model's directory; the DuckDB file, the staged payloads being
// applied and the snapshots being published live below it.
func (c *Config) dir() string         { return filepath.Join(c.DataDir, c.Model) }
func (c *Config) dbPath() string      { return filepath.Join(c.dir(), c.Model+".duckdb") }
func (c *Config) stagingDir() string  { return filepath.Join(c.dir(), "staging") }
func (c *Config) versionsDir() string { return filepath.Join(c.dir(), "versions") }
