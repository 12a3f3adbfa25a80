package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/internal/pgcluster"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// bench is a running stack and the state the scenarios share.
type bench struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	stderr io.Writer
	ns     *server.Server
	pg     *pgcluster.Cluster
	common app.Common
	nc     *nats.Conn
	js     jetstream.JetStream
	// clients are the submitting clients of scenario 1 and 5, one NATS
	// connection each.
	clients []jetstream.JetStream
	ctl     *controldb.DB
	client  *client.Client // submit-and-wait, on nc

	stopDispatcher context.CancelFunc
	dispatcherDone chan error

	flights   string // the flights file the scenarios use
	large     string // model holding the flights (scenario 2, used by 3 and 4)
	largeBase string // DuckDB file of the baseline holding the flights
}

// Run starts a stack, runs the configured scenarios, prints the table on
// stdout (progress on stderr) and writes the JSON report.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) (err error) {
	started := time.Now()
	rep := &Report{Started: started, Quick: cfg.Quick, Settings: cfg}
	rep.Machine.LoadStart = loadAvg()
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			return err
		}
		// This process runs the dispatcher, the NATS server and the
		// benchmark's clients.
		stop, err := startCPUProfile(filepath.Join(cfg.Profile, "teabench.cpu.pprof"))
		if err != nil {
			return err
		}
		defer func() {
			stop()
			err = errors.Join(err, writeHeapProfile(filepath.Join(cfg.Profile, "teabench.heap.pprof")))
		}()
	}
	b, err := start(ctx, cfg, stderr)
	if b != nil {
		defer func() { err = errors.Join(err, b.close()) }()
	}
	if err != nil {
		return err
	}
	rep.Machine = b.machine(ctx, rep.Machine)
	type scenario struct {
		n   string
		run func(context.Context) ([]Result, error)
	}
	all := []scenario{{"1", b.scenarioSmall}, {"2", b.scenarioBulk}, {"2A", b.scenarioBulkIngest}, {"2P", b.scenarioProfiles}, {"2G", b.scenarioSource}, {"3", b.scenarioChange}, {"3D", b.scenarioDerived}, {"3L", b.scenarioLarge}, {"4", b.scenarioQueries}, {"5", b.scenarioMany}, {"6", b.scenarioWasm}}
	for _, s := range all {
		if !cfg.has(s.n) {
			continue
		}
		b.progress("scenario %s", s.n)
		res, err := s.run(ctx)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			rep.Results = append(rep.Results, Result{ID: s.n, Name: "scenario " + s.n, Err: err.Error()})
			b.progress("scenario %s: %v", s.n, err)
		}
	}
	rep.Machine.LoadEnd = loadAvg()
	rep.Duration = time.Since(started).Round(time.Second).String()
	fmt.Fprintln(stdout)
	rep.writeTable(stdout)
	if cfg.JSON != "" {
		if err := rep.writeJSON(cfg.JSON); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nreport written to %s (%s)\n", cfg.JSON, rep.Duration)
	}
	return nil
}

// start starts NATS, Postgres, the object store and the dispatcher the way
// `teactl dev` does, and connects the benchmark's clients.
func start(ctx context.Context, cfg Config, stderr io.Writer) (*bench, error) {
	b := &bench{cfg: cfg, stderr: stderr}
	b.common.LogLevel = "warn"
	if cfg.Verbose {
		b.common.LogLevel = "info"
	}
	b.log = b.common.Logger(stderr, "teabench")
	var err error
	if b.dir = cfg.Dir; b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "teabench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	// Postgres runs as the postgres user when we are root: it must reach
	// its directory.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return b, err
	}
	if b.dir, err = filepath.Abs(b.dir); err != nil {
		return b, err
	}
	b.progress("starting the stack in %s", b.dir)
	if cfg.Profile != "" {
		abs, _ := filepath.Abs(cfg.Profile)
		os.Setenv(envProfile, abs)
	}
	os.Setenv(envLowMemory, cfg.LowMemory)

	if b.ns, err = natsembed.Start(natsembed.Options{StoreDir: filepath.Join(b.dir, "nats")}); err != nil {
		return b, err
	}
	b.common.NATSURL = b.ns.ClientURL()
	if b.pg, err = pgcluster.Start(ctx, filepath.Join(b.dir, "postgres"), b.log); err != nil {
		return b, err
	}
	b.common.PostgresURL = b.pg.URL()
	// The db-managers (child processes of the dispatcher, started later)
	// know the bench's Postgres as source teabench (scenario 2g).
	os.Setenv("TEATREE_SOURCE_"+strings.ToUpper(sourceName), b.pg.URL())
	b.common.StoreURL = filepath.Join(b.dir, "objects")
	if err := os.MkdirAll(b.common.StoreURL, 0o755); err != nil {
		return b, err
	}
	exe, err := os.Executable()
	if err != nil {
		return b, err
	}
	dcfg := app.DispatcherConfig{Common: b.common, DataDir: filepath.Join(b.dir, "models"), Threads: cfg.Threads, MemoryLimit: cfg.MemoryLimit, Migrate: true}
	dcfg.Dispatcher.IdleTimeout = cfg.IdleTimeout
	ready := make(chan struct{})
	dcfg.Ready = func() error { close(ready); return nil }
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stopDispatcher, b.dispatcherDone = cancel, make(chan error, 1)
	go func() { b.dispatcherDone <- app.RunDispatcher(dctx, dcfg, []string{exe, "dbmanager"}, stderr) }()
	select {
	case <-ready:
	case err := <-b.dispatcherDone:
		b.dispatcherDone <- err
		return b, fmt.Errorf("bench: dispatcher: %w", err)
	case <-ctx.Done():
		return b, ctx.Err()
	}

	if b.nc, b.js, err = queue.Connect(b.common.NATSURL, "teabench"); err != nil {
		return b, err
	}
	for i := range cfg.Clients {
		nc, _, err := queue.Connect(b.common.NATSURL, fmt.Sprintf("teabench-client-%d", i))
		if err != nil {
			return b, err
		}
		// A client has every request of a run in flight at once
		// (scenario 1 does not wait for each PubAck): jetstream's
		// default of 4,000 pending would stall the 20,000.
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(4000, 2*cfg.Small)))
		if err != nil {
			return b, err
		}
		b.clients = append(b.clients, js)
	}
	if b.ctl, err = controldb.Open(ctx, b.common.PostgresURL); err != nil {
		return b, err
	}
	if b.client, err = client.New(client.Options{JetStream: b.js, Control: b.ctl, CacheDir: filepath.Join(b.dir, "cache")}); err != nil {
		return b, err
	}
	return b, nil
}

// close stops the stack and removes the work directory unless kept.
func (b *bench) close() error {
	var errs []error
	for _, js := range b.clients {
		js.Conn().Close()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	if b.ctl != nil {
		b.ctl.Close()
	}
	if b.stopDispatcher != nil {
		b.stopDispatcher()
		if err := <-b.dispatcherDone; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("bench: dispatcher: %w", err))
		}
	}
	if b.pg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, b.pg.Stop(ctx))
		cancel()
	}
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
	if !b.cfg.Keep && b.cfg.Dir == "" && b.dir != "" {
		errs = append(errs, os.RemoveAll(b.dir))
	} else if b.dir != "" {
		b.progress("work directory kept: %s", b.dir)
	}
	return errors.Join(errs...)
}

// progress prints one progress line on stderr.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "%s teabench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// machine fills in the machine description.
func (b *bench) machine(ctx context.Context, m Machine) Machine {
	m.Cores = runtime.NumCPU()
	m.MemoryBytes = kBField("/proc/meminfo", "MemTotal")
	m.CPU = cpuModel()
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	m.Kernel = "Linux " + strings.TrimSpace(string(rel))
	m.OS = runtime.GOOS + "/" + runtime.GOARCH
	m.Go = runtime.Version()
	m.NATSServer = server.VERSION
	m.WorkFS = fsType(b.dir)
	if db, err := duck.Open(ctx, "", duck.Options{}); err == nil {
		_ = db.QueryRowContext(ctx, "SELECT version()").Scan(&m.DuckDB)
		db.Close()
	}
	if conn, err := pgx.Connect(ctx, b.common.PostgresURL); err == nil {
		_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&m.Postgres)
		m.Postgres = "PostgreSQL " + m.Postgres
		conn.Close(ctx)
	}
	return m
}

// createModel creates model id with the default settings owning the
// requests published from now on (as `teactl model create` does).
func (b *bench) createModel(ctx context.Context, id string) error {
	return b.createModelWith(ctx, controldb.Model{ID: id})
}

// createModelWith creates model m (its settings: retention, allow_sql)
// owning the requests published from now on.
func (b *bench) createModelWith(ctx context.Context, m controldb.Model) error {
	last, err := queue.StreamLastSeq(ctx, b.js)
	if err != nil {
		return err
	}
	m.StartSeq = last + 1
	if _, err := b.ctl.CreateModel(ctx, m); err != nil {
		return fmt.Errorf("bench: create model %s: %w", m.ID, err)
	}
	return nil
}

// cost is what the publication of one version put in the object store.
type cost struct {
	Version  int64
	Uploaded int64 // model_version.uploaded_bytes: the new blocks and the new Parquet files
	Parquet  int64 // of which the data files the version added
}

// versionCost reads the cost of version v of model m from Postgres. The
// Parquet share counts the data files version v-1 does not list (all of
// them for the first version).
func (b *bench) versionCost(ctx context.Context, m string, v int64) (cost, error) {
	if v <= 0 {
		return cost{}, fmt.Errorf("bench: %s: the notification names no version", m)
	}
	cur, err := b.ctl.GetVersion(ctx, m, v)
	if err != nil {
		return cost{}, err
	}
	old := map[string]bool{}
	if v > 1 { // GetVersion(m, 0) is the latest
		prev, err := b.ctl.GetVersion(ctx, m, v-1)
		if err != nil {
			return cost{}, err
		}
		for _, t := range prev.Tables {
			for _, f := range t.Files {
				old[f.Key] = true
			}
		}
	}
	c := cost{Version: v, Uploaded: cur.Uploaded}
	for _, t := range cur.Tables {
		for _, f := range t.Files {
			if !old[f.Key] {
				c.Parquet += f.Bytes
			}
		}
	}
	return c, nil
}

// submitWait submits r and waits for its final notification
// (client.Submit, client.Wait); it returns the time from submit to the
// notification and fails unless r was applied.
func (b *bench) submitWait(ctx context.Context, r model.Request, timeout time.Duration) (time.Duration, model.Notification, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	rc, err := b.client.Submit(ctx, r)
	if err != nil {
		return 0, model.Notification{}, err
	}
	n, err := b.client.Wait(ctx, rc)
	d := time.Since(t0)
	if err != nil {
		return d, n, fmt.Errorf("bench: wait for %s on %s: %w", r.Function, r.Model, err)
	}
	if n.Status != model.StatusApplied {
		return d, n, fmt.Errorf("bench: %s on %s: %s: %s", r.Function, r.Model, n.Status, n.Error)
	}
	return d, n, nil
}
