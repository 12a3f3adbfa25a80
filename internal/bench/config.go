package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/teatree/teatree/dbmanager"
)

// Config configures a benchmark run. Defaults (full run / -quick) are
// written next to each field.
type Config struct {
	Quick       bool          // small sizes: the whole run in under 2 minutes
	Runs        int           // measured runs per scenario after the warm-up; default 3 (at least 3)
	Scenarios   []string      // scenarios to run, of 1, 2 (2a, 2b), 2a, 2p, 2g, 3, 3d, 3L, 4, 5, 6; default 1,2,2p,2g,3,3d,4,5,6 (3L: make bench-large)
	Small       int           // scenario 1: requests per run; default 2000 (quick 500; the issue names 20000)
	Clients     int           // scenario 1: submitting clients; default 4
	Models      int           // scenario 1: models of the multi-model case; default 20
	PacedFor    time.Duration // scenario 1: length of the half-rate latency run; default 10s (quick 3s)
	Flights     string        // scenario 2: the flights file; default data/flights-3m.parquet
	FlightsRows int           // scenario 2: use only the first N rows (0: all); default 0 (quick 300000)
	LowMemory   string        // scenario 2: memory_limit of the low-memory run; default 256MB ("" skips it)
	SourceRows  int           // scenario 2g: rows of the Postgres source (the first of the flights); default 1000000 (quick 100000)
	Changes     int           // scenario 3: single-row appends measured; default 5 (at least Runs)
	LargeRows   int           // scenario 3L: rows of the synthetic table (about 70 B each); default 32000000, ≈2.2 GB (quick 2000000)
	LargeUpdate int           // scenario 3L: 1 % updates measured; default 1
	ManyModels  int           // scenario 5: models; default 50 (quick 5; the issue names 500)
	ManyReqs    int           // scenario 5: requests per model; default 20 (quick 10)
	Bin         string        // directory of teactl; default bin
	JSON        string        // write the JSON report here ("" = none)
	Dir         string        // work directory (default: a new temporary one, removed at the end)
	Keep        bool          // keep the work directory
	Threads     int           // DuckDB threads of the db-managers and the baselines; default 2
	MemoryLimit string        // DuckDB memory_limit of the db-managers and the baselines; default 2GB
	IdleTimeout time.Duration // the dispatcher's idle timeout; default 20s (quick 3s)
	Profile     string        // write CPU and heap profiles of the db-managers and of this process here ("" = none)
	Verbose     bool          // stack logs at info level on stderr (default warn)
}

// parse reads the flags in args into a Config with defaults filled in.
func parse(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("teabench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", "1,2,2p,2g,3,3d,4,5,6", "comma-separated scenarios to run (1 small requests, 2 bulk ingest (2a and the low-memory 2b), 2a bulk ingest alone, 2p bulk ingest with profiles on and off, 2g append from a Postgres source, 3 small change, 3d small change with a derived table, 3L small change to a 2 GB model, 4 queries, 5 many models, 6 a WebAssembly map against native Go and SQL)")
	fs.BoolVar(&c.Quick, "quick", false, "small sizes: the whole run in under 2 minutes")
	fs.IntVar(&c.Runs, "runs", 3, "measured runs per scenario after a warm-up (at least 3)")
	fs.IntVar(&c.Small, "requests", 0, "scenario 1: requests per run (default 2000, quick 500; the issue names 20000)")
	fs.IntVar(&c.Clients, "clients", 4, "scenario 1: submitting clients")
	fs.IntVar(&c.Models, "models", 20, "scenario 1: models of the multi-model case")
	fs.DurationVar(&c.PacedFor, "paced-for", 0, "scenario 1: length of the half-rate latency run (default 10s, quick 3s)")
	fs.StringVar(&c.Flights, "flights", "data/flights-3m.parquet", "scenario 2: the flights Parquet file (make data)")
	fs.IntVar(&c.FlightsRows, "flights-rows", -1, "scenario 2: use the first N rows only (0: all; default all, quick 300000)")
	fs.StringVar(&c.LowMemory, "low-memory", "256MB", `scenario 2: memory_limit of the low-memory ingest run ("" skips it)`)
	fs.IntVar(&c.SourceRows, "source-rows", 0, "scenario 2g: rows of the Postgres source (default 1000000, quick 100000)")
	fs.IntVar(&c.Changes, "changes", 0, "scenario 3: single-row appends measured (default 5, at least -runs)")
	fs.IntVar(&c.LargeRows, "large-rows", 0, "scenario 3L: rows of the synthetic table, about 70 B each in the file (default 32000000: ≈2.2 GB; quick 2000000)")
	fs.IntVar(&c.LargeUpdate, "large-updates", 1, "scenario 3L: 1 % updates of the synthetic table measured")
	fs.IntVar(&c.ManyModels, "many-models", -1, "scenario 5: models (default 50, quick 5; the issue names 500)")
	fs.IntVar(&c.ManyReqs, "many-requests", 0, "scenario 5: requests per model (default 20, quick 10)")
	fs.StringVar(&c.Bin, "bin", "bin", "directory of the teactl binary (make build)")
	fs.StringVar(&c.JSON, "json", "", "write the JSON report to this file")
	fs.StringVar(&c.Dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory")
	fs.IntVar(&c.Threads, "duckdb-threads", dbmanager.DefaultThreads, "DuckDB threads of the db-managers and the baselines")
	fs.StringVar(&c.MemoryLimit, "duckdb-memory-limit", "2GB", "DuckDB memory_limit of the db-managers and the baselines")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "the dispatcher's idle timeout (default 20s, quick 3s)")
	fs.StringVar(&c.Profile, "profile", "", "write pprof CPU and heap profiles of every db-manager and of this process (dispatcher, NATS, clients) to this directory")
	fs.BoolVar(&c.Verbose, "v", false, "log the stack at info level on stderr")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.ToUpper(strings.TrimSpace(s))
		if !slices.Contains(scenarios, s) {
			return c, fmt.Errorf("-scenarios: %q is not one of %s", s, strings.Join(scenarios, ", "))
		}
		c.Scenarios = append(c.Scenarios, s)
	}
	pick := func(v *int, full, quick int) {
		if *v <= 0 {
			*v = full
			if c.Quick {
				*v = quick
			}
		}
	}
	pick(&c.Small, 2000, 500)
	pick(&c.Changes, 5, 3)
	pick(&c.SourceRows, 1000000, 100000)
	pick(&c.ManyReqs, 20, 10)
	pick(&c.LargeRows, 32000000, 2000000)
	if c.FlightsRows < 0 {
		c.FlightsRows = 0
		if c.Quick {
			c.FlightsRows = 300000
		}
	}
	if c.ManyModels < 0 {
		c.ManyModels = 50
		if c.Quick {
			c.ManyModels = 5
		}
	}
	if c.PacedFor <= 0 {
		c.PacedFor = 10 * time.Second
		if c.Quick {
			c.PacedFor = 3 * time.Second
		}
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 20 * time.Second
		if c.Quick {
			c.IdleTimeout = 3 * time.Second
		}
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	var errs []error
	if c.Runs < 3 {
		errs = append(errs, errors.New("-runs: at least 3 runs are needed for a median and a spread"))
	}
	c.Changes = max(c.Changes, c.Runs)
	if c.Clients < 1 || c.Models < 1 || c.ManyReqs < 2 || c.Threads < 1 || c.LargeUpdate < 1 {
		errs = append(errs, errors.New("-clients, -models, -duckdb-threads, -large-updates must be positive and -many-requests at least 2"))
	}
	if c.LargeRows < 100 || c.LargeUpdate > 100 {
		errs = append(errs, errors.New("-large-rows must be at least 100 and -large-updates at most 100 (each update touches its own 1 % of the rows)"))
	}
	if c.needsFlights() {
		if _, err := os.Stat(c.Flights); err != nil {
			errs = append(errs, fmt.Errorf("-flights: %w (make data fetches it)", err))
		}
	}
	if _, err := os.Stat(filepath.Join(c.Bin, WasmModule)); err != nil && c.has("6") {
		errs = append(errs, fmt.Errorf("-bin: %w (make %s builds it)", err, filepath.Join(c.Bin, WasmModule)))
	}
	teactl := filepath.Join(c.Bin, "teactl")
	if _, err := os.Stat(teactl); err != nil && (c.has("2") || c.has("2A") || c.has("2P") || c.has("3L") || c.has("4")) {
		errs = append(errs, fmt.Errorf("-bin: %w (make build builds it)", err))
	}
	return errors.Join(errs...)
}

// scenarios are the scenario names -scenarios takes, in the order they
// run.
var scenarios = []string{"1", "2", "2A", "2P", "2G", "3", "3D", "3L", "4", "5", "6"}

func (c *Config) has(s string) bool { return slices.Contains(c.Scenarios, s) }

func (c *Config) needsFlights() bool {
	return c.has("2") || c.has("2A") || c.has("2P") || c.has("2G") || c.has("3") || c.has("3D") || c.has("4") || c.has("6")
}

// Main runs teabench with args (without the program name) and returns the
// process exit code: 0 done, 1 error, 2 bad usage. `teabench dbmanager
// …` runs a db-manager instead (the dispatcher's child processes).
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "dbmanager" {
		if err := DBManager(ctx, args[1:], getenv, stderr); err != nil {
			fmt.Fprintln(stderr, "teabench dbmanager:", err)
			return 1
		}
		return 0
	}
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "teabench:", err)
		return 2
	}
	if err := Run(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "teabench:", err)
		return 1
	}
	return 0
}
