package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"

	"github.com/teatree/teatree/console"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/telemetry"
)

// DBManager runs the db-manager binary: `dbmanager --model M [flags]`.
func DBManager(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("dbmanager", pflag.ContinueOnError)
	s := &envflag.Set{FS: fs, Getenv: getenv}
	var common Common
	var cfg dbmanager.Config
	common.RegisterFlags(s)
	registerDBManagerFlags(s, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	if err := errors.Join(s.Err(), common.Validate(true, true), cfg.Validate()); err != nil {
		return err
	}
	log := common.Logger(stderr, "dbmanager")
	shutdown, err := telemetry.Setup(ctx, "teatree-dbmanager")
	if err != nil {
		return err
	}
	defer shutdown(context.WithoutCancel(ctx))
	deps, err := common.Connect(ctx, "teatree-dbmanager-"+cfg.Model)
	if err != nil {
		return err
	}
	defer deps.Close()
	m, err := dbmanager.New(cfg, log, deps.JS, deps.Ctl, deps.Store)
	if err != nil {
		return err
	}
	return m.Run(ctx)
}

// registerDBManagerFlags registers the flags of the db-manager's c on s,
// with c's defaults (dbmanager.DefaultThreads, …).
func registerDBManagerFlags(s *envflag.Set, c *dbmanager.Config) {
	s.String(&c.Model, "model", "TEATREE_MODEL", "", "model id")
	s.String(&c.DataDir, "data-dir", "TEATREE_DATA_DIR", dbmanager.DefaultDataDir, "directory for model DuckDB files")
	s.Int(&c.Threads, "duckdb-threads", "TEATREE_DUCKDB_THREADS", dbmanager.DefaultThreads, "DuckDB threads")
	s.String(&c.MemoryLimit, "duckdb-memory-limit", "TEATREE_DUCKDB_MEMORY_LIMIT", dbmanager.DefaultMemoryLimit, "DuckDB memory_limit")
	s.String(&c.HealthAddr, "health-addr", "TEATREE_HEALTH_ADDR", "", "serve /livez and /readyz on this address (e.g. :8080)")
	s.Int(&c.BatchSize, "batch-size", "TEATREE_BATCH_SIZE", dbmanager.DefaultBatchSize, "most requests applied in one DuckDB transaction")
	s.Float64(&c.CompactFree, "compact-free", "TEATREE_COMPACT_FREE", dbmanager.DefaultCompactFree, "compact the live file at a cut when this fraction of its blocks is free (and at least --compact-min-bytes); negative: never")
	s.Int(&c.BlockSize, "block-size", "TEATREE_BLOCK_SIZE", dbmanager.DefaultBlockSize, "DuckDB block size in bytes of a new live file and of a compaction (16384 to 262144, a power of two)")
	s.Int64(&c.CompactMinBytes, "compact-min-bytes", "TEATREE_COMPACT_MIN_BYTES", dbmanager.DefaultCompactMinBytes, "compact only when the free blocks are at least this many bytes")
	s.String(&c.SourcesFile, "sources", "TEATREE_SOURCES", "", "file of Postgres sources for append (name=postgres://… per line, or model/name=… for this model only; or a JSON object); TEATREE_SOURCE_<NAME>=postgres://… adds one")
	s.String(&c.Profiles, "profiles", "TEATREE_PROFILES", dbmanager.DefaultProfiles, "column profiles of the data files written: on or off")
	s.Duration(&c.BlockGrace, "block-grace", "TEATREE_BLOCK_GRACE", retention.DefaultGrace, "keep snapshot blocks no retained version uses this long after upload and expiry (readers may be pulling)")
	s.Int(&c.WasmMemoryMiB, "wasm-memory-mib", "TEATREE_WASM_MEMORY_MIB", dbmanager.DefaultWasmMemoryMiB, "memory cap of each WebAssembly module instance, MiB (at most 4096)")
	s.Duration(&c.WasmTimeout, "wasm-timeout", "TEATREE_WASM_TIMEOUT", dbmanager.DefaultWasmTimeout, "time one request may spend in its WebAssembly module")
	s.String(&c.WasmCacheDir, "wasm-cache", "TEATREE_WASM_CACHE", "", "directory of compiled WebAssembly modules (default: <data-dir>/wasm-cache)")
	s.Bool(&c.KeepStaged, "keep-staged", "TEATREE_KEEP_STAGED", false, "keep applied requests' staged payloads after publication (teactl model verify replays them; the dispatcher's sweep deletes them after its grace)")
}

// DispatcherConfig is the configuration of the dispatcher binary.
type DispatcherConfig struct {
	Common
	Dispatcher  dispatcher.Config
	Streams     queue.Config
	DataDir     string // passed to local db-managers
	Threads     int    // passed to local db-managers
	MemoryLimit string // passed to local db-managers
	Command     string // db-manager command line (local mode)
	Migrate     bool   // migrate the control tables at start
	// Ready, when set, is called once the streams exist and the control
	// tables are migrated, before dispatching starts.
	Ready func() error

	Mode        string // local (child processes) or kubernetes (a StatefulSet per model)
	HealthAddr  string // /livez and /readyz; empty: none
	ConsoleAddr string // the read-only web console and /metrics; empty: none ($TEATREE_CONSOLE_ADDR)
	// ConsoleListener, when set, serves the console instead of ConsoleAddr.
	ConsoleListener net.Listener
	Namespace       string // kubernetes mode
	PodName         string // kubernetes mode: leader election identity
	DBManagerImage  string // kubernetes mode
}

// RegisterFlags registers the dispatcher's flags.
func (c *DispatcherConfig) RegisterFlags(s *envflag.Set) {
	c.Common.RegisterFlags(s)
	s.Duration(&c.Dispatcher.IdleTimeout, "idle-timeout", "TEATREE_IDLE_TIMEOUT", dispatcher.DefaultIdleTimeout, "stop a db-manager idle this long")
	s.Duration(&c.Dispatcher.StagingGrace, "staging-grace", "TEATREE_STAGING_GRACE", dispatcher.DefaultStagingGrace, "delete a staged payload this old that no pending request uses (staged, never submitted)")
	s.Duration(&c.Dispatcher.StagingSweep, "staging-sweep", "TEATREE_STAGING_SWEEP", dispatcher.DefaultStagingSweep, "how often to sweep the staging area for abandoned payloads")
	s.String(&c.DataDir, "data-dir", "TEATREE_DATA_DIR", dbmanager.DefaultDataDir, "directory for model DuckDB files (local db-managers)")
	s.Int(&c.Threads, "duckdb-threads", "TEATREE_DUCKDB_THREADS", dbmanager.DefaultThreads, "DuckDB threads of each db-manager")
	s.String(&c.MemoryLimit, "duckdb-memory-limit", "TEATREE_DUCKDB_MEMORY_LIMIT", dbmanager.DefaultMemoryLimit, "DuckDB memory_limit of each db-manager")
	s.String(&c.Command, "dbmanager-command", "TEATREE_DBMANAGER_COMMAND", "", "command that runs a db-manager (default: the dbmanager binary next to this one, else on PATH)")
	s.Bool(&c.Migrate, "migrate", "TEATREE_MIGRATE", true, "migrate the Postgres control tables at start")
	s.Duration(&c.Streams.MaxAge, "request-max-age", "TEATREE_REQUEST_MAX_AGE", queue.DefaultMaxAge, "how long the request log keeps requests")
	s.Duration(&c.Streams.Duplicates, "dedupe-window", "TEATREE_DEDUPE_WINDOW", queue.DefaultDuplicates, "JetStream duplicate window for request ids")
	s.Int(&c.Streams.Replicas, "replicas", "TEATREE_STREAM_REPLICAS", queue.DefaultReplicas, "stream replicas (3 on a NATS cluster)")
	host, _ := os.Hostname()
	s.String(&c.Mode, "mode", "TEATREE_MODE", "local", "where db-managers run: local (child processes) or kubernetes (a StatefulSet per model)")
	s.String(&c.HealthAddr, "health-addr", "TEATREE_HEALTH_ADDR", "", "serve /livez and /readyz on this address (e.g. :8080)")
	s.String(&c.ConsoleAddr, "console-addr", "TEATREE_CONSOLE_ADDR", DefaultConsoleAddr, "serve the read-only web console and /metrics on this address (empty: none)")
	s.String(&c.Namespace, "namespace", "TEATREE_NAMESPACE", "", "kubernetes mode: namespace of the db-manager StatefulSets")
	s.String(&c.PodName, "pod-name", "TEATREE_POD_NAME", host, "kubernetes mode: identity in the leader election")
	s.String(&c.DBManagerImage, "dbmanager-image", "TEATREE_DBMANAGER_IMAGE", "", "kubernetes mode: container image of the db-manager")
	s.Duration(&c.Streams.LeaseTTL, "lease-ttl", "TEATREE_LEASE_TTL", queue.DefaultLeaseTTL, "writer lease TTL: a db-manager that cannot renew within it stops writing")
}

// DefaultConsoleAddr is the dispatcher's default console address:
// loopback only.
const DefaultConsoleAddr = "127.0.0.1:4380"

// ChildEnv is the environment of the local db-managers.
func (c *DispatcherConfig) ChildEnv() []string {
	abs, _ := filepath.Abs(c.DataDir)
	return append(c.Common.Env(),
		"TEATREE_DATA_DIR="+abs,
		"TEATREE_DUCKDB_THREADS="+strconv.Itoa(c.Threads),
		"TEATREE_DUCKDB_MEMORY_LIMIT="+c.MemoryLimit,
	)
}

// Dispatcher runs the dispatcher binary with local db-managers.
func Dispatcher(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("dispatcher", pflag.ContinueOnError)
	s := &envflag.Set{FS: fs, Getenv: getenv}
	var cfg DispatcherConfig
	cfg.RegisterFlags(s)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(s.Err(), cfg.Validate(true, true)); err != nil {
		return err
	}
	command := strings.Fields(cfg.Command)
	switch cfg.Mode {
	case "local":
	case "kubernetes":
		if cfg.Namespace == "" || cfg.DBManagerImage == "" {
			return fmt.Errorf("%w: --mode kubernetes needs --namespace and --dbmanager-image (TEATREE_NAMESPACE, TEATREE_DBMANAGER_IMAGE)", model.ErrInvalid)
		}
		return RunDispatcher(ctx, cfg, nil, stderr)
	default:
		return fmt.Errorf("%w: --mode %q: use local or kubernetes", model.ErrInvalid, cfg.Mode)
	}
	if len(command) == 0 {
		bin, err := findDBManager()
		if err != nil {
			return err
		}
		command = []string{bin}
	}
	return RunDispatcher(ctx, cfg, command, stderr)
}

// RunDispatcher runs a dispatcher until ctx ends: in local mode with
// db-managers started by command (and stopped at the end), in kubernetes
// mode with a StatefulSet per model, as the leader of its replicas.
func RunDispatcher(ctx context.Context, cfg DispatcherConfig, command []string, stderr io.Writer) error {
	log := cfg.Logger(stderr, "dispatcher")
	shutdown, err := telemetry.Setup(ctx, "teatree-dispatcher")
	if err != nil {
		return err
	}
	defer shutdown(context.WithoutCancel(ctx))
	deps, err := cfg.Connect(ctx, "teatree-dispatcher")
	if err != nil {
		return err
	}
	defer deps.Close()
	if err := queue.EnsureStreams(ctx, deps.JS, cfg.Streams); err != nil {
		return err
	}
	if cfg.Migrate {
		if err := deps.Ctl.Migrate(ctx); err != nil {
			return err
		}
	}
	if cfg.Ready != nil {
		if err := cfg.Ready(); err != nil {
			return err
		}
	}
	if cfg.HealthAddr != "" {
		go func() {
			if err := serveHealth(ctx, cfg.HealthAddr, deps.NC); err != nil {
				log.Error("health endpoint stopped; probes will fail", "err", err)
			}
		}()
	}
	con := console.New(deps.JS, deps.Ctl, log)
	if err := con.RegisterMetrics(otel.Meter("github.com/teatree/teatree/dispatcher")); err != nil {
		return err
	}
	if ln := cfg.ConsoleListener; ln != nil || cfg.ConsoleAddr != "" {
		if ln == nil {
			if ln, err = net.Listen("tcp", cfg.ConsoleAddr); err != nil {
				return fmt.Errorf("console: %w (another process uses the port? pass --console-addr, or an empty one for no console)", err)
			}
		}
		log.Info("console", "url", "http://"+ln.Addr().String()+"/")
		go func() {
			if err := telemetry.Serve(ctx, ln, con.Handler()); err != nil {
				log.Error("console stopped", "err", err)
			}
		}()
	}
	if cfg.Mode == "kubernetes" {
		return runKubernetes(ctx, cfg, deps, log)
	}
	runner := &dispatcher.LocalRunner{Command: command, Env: cfg.ChildEnv(), Log: log}
	defer runner.Close()
	log.Info("dispatcher running", "nats", cfg.NATSURL, "idle_timeout", cfg.Dispatcher.IdleTimeout)
	return dispatcher.New(cfg.Dispatcher, log, deps.JS, deps.Ctl, deps.Store, runner).Run(ctx)
}

// findDBManager finds the dbmanager binary next to this executable, else
// on PATH.
func findDBManager() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "dbmanager")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("dbmanager")
	if err != nil {
		return "", fmt.Errorf("no dbmanager binary next to this one or on PATH: build it (make build) or set --dbmanager-command")
	}
	return p, nil
}
