package dbmanager

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
	"github.com/teatree/teatree/udf"
)

// Manager is the db-manager of one model.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	js     jetstream.JetStream
	ctl    *controldb.DB
	store  objstore.Store
	notify *notify.Publisher
	tracer trace.Tracer
	meter  metrics

	// noDerived: the live file has no derived tables (derived.go); the
	// applier skips loading them until a derive applies.
	noDerived bool
	// tables caches the catalog lookups of the data functions across
	// transactions (functions.TableCache): emptied by the functions that
	// change the schema, and here after a rollback, a refresh of derived
	// tables and whenever the file is opened.
	tables *functions.TableCache
	// replay: this Manager replays a model's requests into a scratch copy
	// (verify.go); it deletes no staged payload and publishes nothing.
	replay bool

	// Set in Run.
	epoch         int64
	model         controldb.Model
	namespace     string // block namespace of the blocks, data files and modules (controldb.Model.Namespace)
	db            *sql.DB
	position      atomic.Uint64 // last applied stream sequence (committed)
	committed     chan struct{} // a batch committed: wake the publisher
	published     int           // versions published since start (GC cadence)
	lastSweep     time.Time     // when retention last swept the namespace (afterPublish)
	duckdbVersion string        // of the DuckDB library (lineage)

	// The live file as a snapshot (see cut): liveMu is held by the applier
	// for each batch and by the cut from CHECKPOINT to capture; live is a
	// descriptor of the DuckDB file kept open until DuckDB closes it (its
	// fcntl lock belongs to the process, see blocks.RemapFile).
	liveMu               sync.Mutex
	live                 *os.File
	dirLock              *os.File // writer.lock, flocked while the process runs (lockDir)
	blockStore           *blocks.Store
	lastMap              *blocks.Map // of the last cut, with stored checksums (nil: map in full)
	lastPublished        *blocks.Map // of version lastPublishedVersion, all its blocks stored
	lastPublishedVersion int64
	cutSplit             []any // the steps of the cut of version cutSplitVersion and their times (split)
	cutSplitVersion      int64
	uploadedAtCut        *blockUpload     // the blocks of the last cut, uploaded while it wrote its data files (nil: not uploaded)
	fetchTook            time.Duration    // fetching the staged payloads of the batch being applied (its log line)
	ready                atomic.Bool      // lease held and consumer bound (readiness)
	errs                 svcinfo.ErrorLog // last failed request or retried step (teactl info)
	wasm                 *udf.Host        // compiles and runs WebAssembly modules (modules.go)

	// crashAfterCommit, when set and returning true, makes the applier stop
	// after a commit and before the ack, as a crash there would (tests).
	crashAfterCommit func() bool
	// loseDelivery, when set and returning true for a message, makes the
	// applier act as if that delivery never arrived (tests only).
	loseDelivery func(jetstream.Msg) bool
	// beforeCancelRead and afterCancelRead, when set, run just before and
	// after markCancelled reads the cancels of a batch (tests only).
	beforeCancelRead, afterCancelRead func()
}

type metrics struct {
	requests  metric.Int64Counter
	applyTime metric.Float64Histogram
	versions  metric.Int64Counter
	bytes     metric.Int64Counter
	batchSize metric.Int64Histogram
}

// New returns a Manager for cfg: its unset fields get their defaults
// (Config.WithDefaults), then it is validated, DataDir made absolute and
// the sources of SourcesFile and the environment added. The error of an
// invalid cfg wraps each problem.
func New(cfg Config, log *slog.Logger, js jetstream.JetStream, ctl *controldb.DB, store objstore.Store) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: --data-dir: %w", err)
	}
	cfg.DataDir = abs
	if err := cfg.loadSources(os.Environ()); err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	bs, err := blocks.NewStore(store, cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	bs.ReuseAge = min(blocks.DefaultReuseAge, cfg.BlockGrace/2)
	meter := otel.Meter("github.com/teatree/teatree/dbmanager")
	m := &Manager{
		blockStore: bs,
		namespace:  cfg.Model,
		cfg:        cfg,
		log:        log.With("model", cfg.Model),
		js:         js,
		ctl:        ctl,
		store:      store,
		notify:     notify.NewPublisher(js),
		tracer:     otel.Tracer("github.com/teatree/teatree/dbmanager"),
		committed:  make(chan struct{}, 1),
	}
	if m.wasm, err = udf.NewHost(cfg.WasmCacheDir); err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	m.meter.requests, _ = meter.Int64Counter("teatree.requests", metric.WithDescription("requests finished by the db-manager, by status"))
	m.meter.applyTime, _ = meter.Float64Histogram("teatree.apply.duration", metric.WithUnit("s"), metric.WithDescription("time to apply and commit one batch"))
	m.meter.versions, _ = meter.Int64Counter("teatree.versions", metric.WithDescription("versions published"))
	m.meter.bytes, _ = meter.Int64Counter("teatree.published.bytes", metric.WithUnit("By"), metric.WithDescription("bytes uploaded to the object store"))
	m.meter.batchSize, _ = meter.Int64Histogram("teatree.batch.size", metric.WithDescription("requests per applied batch (group commit)"),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
	return m, nil
}

// ErrFatal marks an error after which the process must exit so that a
// restart recovers: a DuckDB fatal error, a lost lease, a stale epoch.
var ErrFatal = errors.New("fatal")

// Run takes the writer lease, opens (or restores) the model's DuckDB file,
// and applies and publishes until ctx ends (it then drains the batch in
// flight, releases the lease and returns nil) or a fatal error occurs.
func (m *Manager) Run(ctx context.Context) error {
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	herr := make(chan error, 1)
	log := m.log
	go func() {
		err := m.serveHealth(hctx)
		if err != nil {
			log.Error("health endpoint stopped; probes will fail", "err", err)
		}
		herr <- err
	}()
	defer func() {
		stopHealth()
		<-herr
	}()
	defer m.wasm.Close(context.WithoutCancel(ctx))
	mdl, err := m.ctl.GetModel(ctx, m.cfg.Model)
	if err != nil {
		return fmt.Errorf("dbmanager: model %s: %w", m.cfg.Model, err)
	}
	m.model = mdl
	if mdl.Namespace != "" && mdl.Namespace != m.namespace {
		// A fork: its blocks and data files are its source's namespace's.
		bs, err := blocks.NewStore(m.store, mdl.Namespace)
		if err != nil {
			return fmt.Errorf("dbmanager: model %s: namespace: %w", m.cfg.Model, err)
		}
		bs.ReuseAge = m.blockStore.ReuseAge
		m.blockStore, m.namespace = bs, mdl.Namespace
		m.log = m.log.With("namespace", mdl.Namespace)
	}
	m.log.Info("waiting for writer lease", "holder", m.cfg.Holder)
	lease, err := queue.AcquireLease(ctx, m.js, m.cfg.Model, m.cfg.Holder, m.cfg.LeasePoll)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dbmanager: %w", err)
	}
	m.epoch = int64(lease.Epoch())
	m.log = m.log.With("epoch", m.epoch)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			m.log.Warn("release lease", "err", err)
		}
	}()
	if err := m.ctl.ClaimEpoch(ctx, m.cfg.Model, m.epoch); err != nil {
		return fmt.Errorf("dbmanager: claim epoch %d: %w: %w", m.epoch, ErrFatal, err)
	}
	m.log.Info("writer lease acquired")

	if err := m.open(ctx); err != nil {
		return err
	}
	defer m.close()
	svc, err := m.addService()
	if err != nil {
		return fmt.Errorf("dbmanager: %w", err)
	}
	defer svc.Stop() // before close: info reads the live file

	defer m.ready.Store(false)

	// The lease keeper ends the whole group when the lease is lost; the
	// applier checks its context before every commit.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := lease.Keep(gctx); err != nil {
			return fmt.Errorf("dbmanager: %w: %w", ErrFatal, err)
		}
		return nil
	})
	g.Go(func() error { return m.applyLoop(gctx) })
	g.Go(func() error { return m.publishLoop(gctx) })
	return g.Wait()
}

// open opens the model's DuckDB file, restoring the latest published
// snapshot first when the file is missing, and loads the position.
func (m *Manager) open(ctx context.Context) error {
	for _, d := range []string{m.cfg.dir(), m.cfg.stagingDir(), m.cfg.versionsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("dbmanager: %w", err)
		}
	}
	if err := m.lockDir(); err != nil {
		return err
	}
	restored := int64(0)
	if _, err := os.Stat(m.cfg.dbPath()); errors.Is(err, os.ErrNotExist) {
		v, err := m.restore(ctx)
		if err != nil {
			m.dirLock.Close()
			return err
		}
		restored = v
	}
	if err := m.openDB(ctx); err != nil {
		m.dirLock.Close()
		return err
	}
	if err := m.initSchema(ctx, restored); err != nil {
		m.close()
		return err
	}
	var pos uint64
	if err := m.db.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&pos); err != nil {
		m.close()
		return fmt.Errorf("dbmanager: read position: %w", err)
	}
	m.position.Store(pos)
	return nil
}

// lockDir takes an exclusive flock on the model directory's writer.lock
// for the life of the process. DuckDB's own lock on its file is an fcntl
// lock that a compaction gives up while it swaps the file; a db-manager
// stopped there (SIGSTOP, a long pause) past its lease must not find the
// file free for a successor when it resumes, nor the successor it.
func (m *Manager) lockDir() error {
	path := filepath.Join(m.cfg.dir(), "writer.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("dbmanager: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("dbmanager: %s is locked by another db-manager process of model %s (it lost its lease and has not exited yet): %w: %w", path, m.cfg.Model, ErrFatal, err)
	}
	m.dirLock = f
	return nil
}

// openDB opens the live DuckDB file and the descriptor of it that cuts map
// it through.
func (m *Manager) openDB(ctx context.Context) error {
	db, err := duck.Open(ctx, m.cfg.dbPath(), duck.Options{
		Threads:     m.cfg.Threads,
		MemoryLimit: m.cfg.MemoryLimit,
		AllowedDirs: []string{m.cfg.stagingDir(), m.cfg.versionsDir(), m.cfg.dir()},
		BlockSize:   m.cfg.BlockSize,
	})
	if err != nil {
		return fmt.Errorf("dbmanager: %w: %w", ErrFatal, err)
	}
	live, err := os.Open(m.cfg.dbPath())
	if err != nil {
		db.Close()
		return fmt.Errorf("dbmanager: %w: %w", ErrFatal, err)
	}
	m.db, m.live, m.lastMap, m.tables = db, live, nil, functions.NewTableCache()
	if err := db.QueryRowContext(ctx, "SELECT library_version FROM pragma_version()").Scan(&m.duckdbVersion); err != nil {
		m.closeDB()
		return fmt.Errorf("dbmanager: DuckDB version: %w", err)
	}
	return nil
}

func (m *Manager) close() {
	if _, err := m.db.Exec("CHECKPOINT"); err != nil {
		m.log.Warn("checkpoint at close", "err", err)
	}
	m.closeDB()
	m.dirLock.Close()
}

// closeDB closes DuckDB, then the descriptor of the live file (closing it
// first would release DuckDB's lock: it is the process's).
func (m *Manager) closeDB() {
	if err := m.db.Close(); err != nil {
		m.log.Warn("close DuckDB", "err", err)
	}
	m.live.Close()
}

// appliedColumns are _teatree.applied's columns in order (schemaSQL).
const appliedColumns = "request_id,seq,function,status,error,payload,queued,applied,digest,modules,reads"

const schemaSQL = `
CREATE SCHEMA IF NOT EXISTS _teatree;
CREATE TABLE IF NOT EXISTS _teatree.position (last_seq UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS _teatree.applied (
	request_id VARCHAR PRIMARY KEY,
	seq        UBIGINT NOT NULL,
	function   VARCHAR NOT NULL,
	status     VARCHAR NOT NULL,
	error      VARCHAR,
	payload    VARCHAR,
	queued     TIMESTAMPTZ,
	applied    TIMESTAMPTZ NOT NULL
);
ALTER TABLE _teatree.applied ADD COLUMN IF NOT EXISTS digest VARCHAR;
ALTER TABLE _teatree.applied ADD COLUMN IF NOT EXISTS modules VARCHAR; -- JSON array of module digests (lineage.go)
ALTER TABLE _teatree.applied ADD COLUMN IF NOT EXISTS reads VARCHAR; -- JSON array of the other models' versions read (reads.go)
CREATE TABLE IF NOT EXISTS _teatree.refused (
	seq        UBIGINT PRIMARY KEY,
	request_id VARCHAR NOT NULL,
	function   VARCHAR NOT NULL,
	error      VARCHAR NOT NULL,
	queued     TIMESTAMPTZ,
	applied    TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS _teatree.settled (
	first_seq UBIGINT PRIMARY KEY,
	last_seq  UBIGINT NOT NULL,
	published TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS _teatree.table_change (table_name VARCHAR PRIMARY KEY, seq UBIGINT NOT NULL);
ALTER TABLE _teatree.table_change ADD COLUMN IF NOT EXISTS modified UBIGINT;
ALTER TABLE _teatree.table_change ADD COLUMN IF NOT EXISTS replaced UBIGINT;
CREATE TABLE IF NOT EXISTS _teatree.outbox (
	version       BIGINT PRIMARY KEY,
	first_seq     UBIGINT NOT NULL,
	last_seq      UBIGINT NOT NULL,
	request_count INTEGER NOT NULL,
	path          VARCHAR NOT NULL,
	sha256        VARCHAR NOT NULL,
	bytes         BIGINT NOT NULL,
	tables        JSON NOT NULL,
	created       TIMESTAMPTZ NOT NULL,
	published     TIMESTAMPTZ
);
ALTER TABLE _teatree.outbox ADD COLUMN IF NOT EXISTS compaction BOOLEAN DEFAULT false;
INSERT INTO _teatree.position SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM _teatree.position);
`

// initSchema creates the bookkeeping tables. After a restore from version
// v, the outbox copied with the snapshot describes older versions; it is
// replaced by one published row for v so numbering continues at v+1.
func (m *Manager) initSchema(ctx context.Context, restored int64) error {
	// In one transaction: one commit (one WAL write and sync) instead of
	// one per statement.
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("dbmanager: connection: %w", err)
	}
	_, err = conn.ExecContext(ctx, "BEGIN TRANSACTION;"+schemaSQL+functions.DerivedSchema+";COMMIT")
	if err != nil {
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	}
	conn.Close()
	if err != nil {
		return fmt.Errorf("dbmanager: create _teatree schema: %w", err)
	}
	// record appends to _teatree.applied by column position.
	var cols string
	if err := m.db.QueryRowContext(ctx, `SELECT string_agg(column_name, ',' ORDER BY column_index) FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = '_teatree' AND table_name = 'applied'`).Scan(&cols); err != nil {
		return fmt.Errorf("dbmanager: read the columns of _teatree.applied: %w", err)
	}
	if cols != appliedColumns {
		return fmt.Errorf("dbmanager: %w: _teatree.applied has columns %s, want %s: the file was written by an unknown release", ErrFatal, cols, appliedColumns)
	}
	if restored == 0 {
		return nil
	}
	v, err := m.ctl.GetVersion(ctx, m.cfg.Model, restored)
	if err != nil {
		return fmt.Errorf("dbmanager: restore: %w", err)
	}
	_, err = m.db.ExecContext(ctx, `DELETE FROM _teatree.outbox;
		INSERT INTO _teatree.outbox (version, first_seq, last_seq, request_count, path, sha256, bytes, tables, created, published)
			VALUES (?, ?, ?, ?, '', ?, ?, '[]', ?, now())`,
		v.Version, v.FirstSeq, v.LastSeq, v.RequestCount, v.SHA256, v.Bytes, v.Created)
	if err != nil {
		return fmt.Errorf("dbmanager: restore: reset outbox: %w", err)
	}
	return nil
}

// restore rebuilds the model's DuckDB file from the latest published
// version (snapshot.Fetch: from the block store, every block and the map
// verified) and returns its version, or 0 when the model has no version yet.
func (m *Manager) restore(ctx context.Context) (int64, error) {
	v, err := m.ctl.GetVersion(ctx, m.cfg.Model, 0)
	if errors.Is(err, model.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dbmanager: restore: %w", err)
	}
	m.log.Warn("no local DuckDB file: restoring the latest published version", "version", v.Version, "last_seq", v.LastSeq, "format", v.SnapshotFormat)
	for _, f := range []string{m.cfg.dbPath() + ".wal", m.cfg.dbPath() + ".wal.checkpoint"} {
		os.Remove(f) // a WAL without its file cannot be replayed onto a restored one
	}
	_, st, err := snapshot.Fetch(ctx, m.store, v, m.cfg.dbPath(), blocks.FetchOptions{})
	if err != nil {
		return 0, fmt.Errorf("dbmanager: restore version %d: %w", v.Version, err)
	}
	m.log.Info("restored", "version", v.Version, "bytes", st.Bytes, "fetched_bytes", st.Fetched)
	return v.Version, nil
}

// stagedPath is where a payload being applied is downloaded.
func (m *Manager) stagedPath(requestID, uri string) string {
	return filepath.Join(m.cfg.stagingDir(), requestID, filepath.Base(uri))
}
