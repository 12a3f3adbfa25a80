package reader

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/internal/svcinfo"
)

// Config configures a reader. Defaults are written next to each field and
// filled by Validate.
type Config struct {
	// Dir holds the versions the reader has open, Dir/<model>/<version>-<seq>.reader.duckdb;
	// default ./reader ($TEATREE_READER_DIR). It is the reader's own: files
	// there are removed when their version is closed, and at start.
	Dir string
	// Threads and MemoryLimit are DuckDB's threads and memory_limit of each
	// open version (one DuckDB instance per version, so that a query sees
	// only its model); default 2 and "512MB" ($TEATREE_DUCKDB_THREADS,
	// $TEATREE_DUCKDB_MEMORY_LIMIT). While a new version opens the old one
	// stays open for its queries: the bound on memory is about
	// MemoryLimit × 2 × the models in use.
	Threads     int
	MemoryLimit string
	// IdleTimeout closes a model no query used for this long; default 10m
	// ($TEATREE_READER_IDLE_TIMEOUT).
	IdleTimeout time.Duration
	// PageBytes bounds the Arrow IPC bytes of one reply message; default
	// DefaultPageBytes, 768 KiB ($TEATREE_READER_PAGE_BYTES). A page is
	// cut before it would exceed it; a single row larger than the
	// connection's max payload fails the query.
	PageBytes int
	// Limits of one query; a request may lower them. MaxRows default
	// 10,000,000 rows, MaxBytes 1 GiB of Arrow IPC, MaxTime 5m from the
	// request to the last page (waiting for the client included)
	// ($TEATREE_READER_MAX_ROWS, _MAX_BYTES, _MAX_TIME).
	MaxRows  int64
	MaxBytes int64
	MaxTime  time.Duration
	// ClientTimeout ends a query whose client asked for no page for this
	// long (gone, or stuck); default 30s ($TEATREE_READER_CLIENT_TIMEOUT).
	ClientTimeout time.Duration
	// MaxQueries bounds the queries running at once; more wait for a slot
	// (within their time limit); default 8 ($TEATREE_READER_MAX_QUERIES).
	MaxQueries int
	// Name is the micro service name; default ServiceName. Version is the
	// micro service version (semver), default the build's
	// (svcinfo.Version).
	Name    string
	Version string
}

// Defaults of Config.
const (
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultPageBytes     = 768 << 10 // 768 KiB: under NATS's default max_payload (1 MiB) with room for headers
	DefaultMaxRows       = 10_000_000
	DefaultMaxBytes      = 1 << 30
	DefaultMaxTime       = 5 * time.Minute
	DefaultClientTimeout = 30 * time.Second
	DefaultMaxQueries    = 8
	DefaultMemoryLimit   = "512MB"
)

// RegisterFlags registers the flags of c on s.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Dir, "dir", "TEATREE_READER_DIR", "reader", "directory of the versions the reader has open (its own: files are removed when closed)")
	s.Int(&c.Threads, "duckdb-threads", "TEATREE_DUCKDB_THREADS", 2, "DuckDB threads of each open version")
	s.String(&c.MemoryLimit, "duckdb-memory-limit", "TEATREE_DUCKDB_MEMORY_LIMIT", DefaultMemoryLimit, "DuckDB memory_limit of each open version")
	s.Duration(&c.IdleTimeout, "idle-timeout", "TEATREE_READER_IDLE_TIMEOUT", DefaultIdleTimeout, "close a model no query used for this long")
	s.Int(&c.PageBytes, "page-bytes", "TEATREE_READER_PAGE_BYTES", DefaultPageBytes, "most Arrow IPC bytes in one reply message")
	s.Int64(&c.MaxRows, "max-rows", "TEATREE_READER_MAX_ROWS", DefaultMaxRows, "most rows one query returns")
	s.Int64(&c.MaxBytes, "max-bytes", "TEATREE_READER_MAX_BYTES", DefaultMaxBytes, "most Arrow IPC bytes one query returns")
	s.Duration(&c.MaxTime, "max-time", "TEATREE_READER_MAX_TIME", DefaultMaxTime, "longest time of one query, from the request to its last page")
	s.Duration(&c.ClientTimeout, "client-timeout", "TEATREE_READER_CLIENT_TIMEOUT", DefaultClientTimeout, "end a query whose client asked for no page for this long")
	s.Int(&c.MaxQueries, "max-queries", "TEATREE_READER_MAX_QUERIES", DefaultMaxQueries, "most queries running at once")
}

// Validate fills the defaults and checks c.
func (c *Config) Validate() error {
	if c.Dir == "" {
		c.Dir = "reader"
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("reader: --dir: %w", err)
	}
	c.Dir = abs
	if c.Threads == 0 {
		c.Threads = 2
	}
	if c.MemoryLimit == "" {
		c.MemoryLimit = DefaultMemoryLimit
	}
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.MaxTime, DefaultMaxTime)
	def(&c.ClientTimeout, DefaultClientTimeout)
	if c.PageBytes == 0 {
		c.PageBytes = DefaultPageBytes
	}
	if c.MaxRows == 0 {
		c.MaxRows = DefaultMaxRows
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxQueries == 0 {
		c.MaxQueries = DefaultMaxQueries
	}
	if c.Name == "" {
		c.Name = ServiceName
	}
	if c.Version == "" {
		c.Version = svcinfo.Version()
	}
	var errs []error
	if c.Threads < 0 {
		errs = append(errs, fmt.Errorf("--duckdb-threads %d: use a positive number", c.Threads))
	}
	if c.PageBytes < 1024 {
		errs = append(errs, fmt.Errorf("--page-bytes %d: use at least 1024", c.PageBytes))
	}
	if c.MaxRows < 0 || c.MaxBytes < 0 || c.MaxQueries < 0 {
		errs = append(errs, errors.New("--max-rows, --max-bytes and --max-queries must be positive"))
	}
	if c.IdleTimeout < 0 || c.MaxTime < 0 || c.ClientTimeout < 0 {
		errs = append(errs, errors.New("--idle-timeout, --max-time and --client-timeout must be positive"))
	}
	return errors.Join(errs...)
}
