// Package controldb is teatree's Postgres control plane: the models, their
// published versions with the content index of every version, and the log
// of every request. The schema lives in migrations/ (goose, embedded).
//
// Every write of a db-manager carries its writer epoch (the revision of its
// lease in NATS KV). PublishVersion and ExpireVersions lock the model row
// and refuse an epoch older than the one recorded by ClaimEpoch, so a
// db-manager that lost its lease cannot publish after its successor
// started: the fence DESIGN.md asks for.
package controldb

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/teatree/teatree/model"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DefaultRetention is the number of versions kept per model unless the
// model says otherwise.
const DefaultRetention = 10

// DB is a connection pool to the control tables. It is safe for concurrent
// use.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects to the Postgres database at url (a postgres:// URL or a
// key=value connection string) and checks that it answers.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("controldb: bad Postgres URL: %w (want postgres://user:pass@host:port/db)", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("controldb: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("controldb: cannot reach Postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return &DB{pool: pool}, nil
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Migrate applies the embedded migrations that are not applied yet. It
// holds a Postgres advisory lock while it runs, so processes starting at
// the same time migrate once.
func (db *DB) Migrate(ctx context.Context) error {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 60))
	if err != nil {
		return fmt.Errorf("controldb: migrate: %w", err)
	}
	sqldb := stdlib.OpenDBFromPool(db.pool)
	defer sqldb.Close()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqldb, fsys, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("controldb: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("controldb: migrate: %w", err)
	}
	return nil
}

// Model is one row of goal_model.
type Model struct {
	ID             string `json:"id"`
	SizeClass      string `json:"size_class"` // small, medium, large, xlarge
	WriterEpoch    int64  `json:"writer_epoch"`
	CurrentVersion int64  `json:"current_version"`
	Retention      int    `json:"retention"`       // versions kept
	AllowSQL       bool   `json:"allow_sql"`       // the privileged sql function
	StartSeq       uint64 `json:"start_seq"`       // first owned sequence of TEATREE_REQUESTS
	SettledSeq     uint64 `json:"settled_seq"`     // requests up to here are published (in a version or the request log)
	Group          string `json:"group,omitempty"` // the model group ("" for none), named like a model id
	// Namespace is the model whose object-store prefix holds this model's
	// blocks, data files and modules: its own id, or for a fork its
	// source's namespace (ForkModel).
	Namespace string `json:"namespace"`
	// ForkedFrom is the version a fork started from (nil for a model
	// created empty).
	ForkedFrom *model.ModelVersion `json:"forked_from,omitempty"`
	// Readers are the models whose requests may read this model's
	// versions (args.reads; SetReaders), sorted.
	Readers []string  `json:"readers,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// SizeClasses are the valid values of Model.SizeClass, smallest first.
var SizeClasses = []string{"small", "medium", "large", "xlarge"}

func (m *Model) validate() error {
	if err := model.ValidateID(m.ID); err != nil {
		return err
	}
	if m.SizeClass == "" {
		m.SizeClass = SizeClasses[0]
	}
	ok := false
	for _, c := range SizeClasses {
		ok = ok || c == m.SizeClass
	}
	if !ok {
		return fmt.Errorf("%w: size class %q is unknown: use one of %v", model.ErrInvalid, m.SizeClass, SizeClasses)
	}
	if m.Retention == 0 {
		m.Retention = DefaultRetention
	}
	if m.Retention < 1 {
		return fmt.Errorf("%w: retention %d keeps no version: use 1 or more", model.ErrInvalid, m.Retention)
	}
	if m.StartSeq == 0 {
		m.StartSeq = 1
	}
	if m.Group != "" {
		if err := model.ValidateID(m.Group); err != nil {
			return fmt.Errorf("group %q: %w", m.Group, err)
		}
	}
	return nil
}

const modelColumns = `id, size_class, writer_epoch, current_version, retention, allow_sql, start_seq, created_at, updated_at, settled_seq, coalesce(model_group, ''),
	coalesce(namespace, id), coalesce(forked_from, ''), coalesce(forked_version, 0), readers`

func scanModel(row pgx.Row) (Model, error) {
	var m Model
	var start, settled, forkedVersion int64
	var forkedFrom string
	err := row.Scan(&m.ID, &m.SizeClass, &m.WriterEpoch, &m.CurrentVersion, &m.Retention, &m.AllowSQL, &start, &m.Created, &m.Updated, &settled, &m.Group,
		&m.Namespace, &forkedFrom, &forkedVersion, &m.Readers)
	if len(m.Readers) == 0 {
		m.Readers = nil
	}
	m.StartSeq, m.SettledSeq = uint64(start), uint64(settled)
	if forkedFrom != "" {
		m.ForkedFrom = &model.ModelVersion{Model: forkedFrom, Version: forkedVersion}
	}
	return m, err
}

// CreateModel inserts m (defaults: size class small, retention 10, start
// sequence 1). An existing id is model.ErrConflict.
func (db *DB) CreateModel(ctx context.Context, m Model) (Model, error) {
	if err := m.validate(); err != nil {
		return Model{}, err
	}
	row := db.pool.QueryRow(ctx, `INSERT INTO goal_model (id, size_class, retention, allow_sql, start_seq, model_group)
		VALUES ($1, $2, $3, $4, $5, nullif($6, '')) RETURNING `+modelColumns, m.ID, m.SizeClass, m.Retention, m.AllowSQL, int64(m.StartSeq), m.Group)
	got, err := scanModel(row)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return Model{}, fmt.Errorf("%w: model %q already exists", model.ErrConflict, m.ID)
	}
	if err != nil {
		return Model{}, fmt.Errorf("controldb: create model %q: %w", m.ID, err)
	}
	return got, nil
}

// GetModel returns model id, or model.ErrNotFound.
func (db *DB) GetModel(ctx context.Context, id string) (Model, error) {
	m, err := scanModel(db.pool.QueryRow(ctx, `SELECT `+modelColumns+` FROM goal_model WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Model{}, fmt.Errorf("%w: model %q does not exist: create it with `teactl model create %s`", model.ErrNotFound, id, id)
	}
	if err != nil {
		return Model{}, fmt.Errorf("controldb: get model %q: %w", id, err)
	}
	return m, nil
}

// ListModels returns all models ordered by id.
func (db *DB) ListModels(ctx context.Context) ([]Model, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+modelColumns+` FROM goal_model ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("controldb: list models: %w", err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Model, error) { return scanModel(r) })
	if err != nil {
		return nil, fmt.Errorf("controldb: list models: %w", err)
	}
	return ms, nil
}

// GroupMembers returns the ids of the models of group g, ordered by id;
// a group no model belongs to is model.ErrNotFound.
func (db *DB) GroupMembers(ctx context.Context, g string) ([]string, error) {
	if err := model.ValidateID(g); err != nil {
		return nil, fmt.Errorf("group %q: %w", g, err)
	}
	rows, err := db.pool.Query(ctx, `SELECT id FROM goal_model WHERE model_group = $1 ORDER BY id`, g)
	if err != nil {
		return nil, fmt.Errorf("controldb: members of group %q: %w", g, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("controldb: members of group %q: %w", g, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no model belongs to group %q: add one with `teactl model create NAME --group %s`", model.ErrNotFound, g, g)
	}
	return ids, nil
}

// SetReaders sets the models whose requests may read model id's versions
// (args.reads of a refresh), replacing the list; none lets no other
// model read it. Each must be a model id (not id itself); they need not
// exist yet. Returns model.ErrNotFound for an unknown id.
func (db *DB) SetReaders(ctx context.Context, id string, readers []string) (Model, error) {
	rs := slices.Clone(readers)
	slices.Sort(rs)
	rs = slices.Compact(rs)
	for _, r := range rs {
		if err := model.ValidateID(r); err != nil {
			return Model{}, fmt.Errorf("reader %q: %w", r, err)
		}
		if r == id {
			return Model{}, fmt.Errorf("%w: model %s always reads itself: name other models", model.ErrInvalid, id)
		}
	}
	if rs == nil {
		rs = []string{}
	}
	got, err := scanModel(db.pool.QueryRow(ctx, `UPDATE goal_model SET readers = $2, updated_at = now() WHERE id = $1 RETURNING `+modelColumns, id, rs))
	if errors.Is(err, pgx.ErrNoRows) {
		return Model{}, fmt.Errorf("%w: model %q does not exist", model.ErrNotFound, id)
	}
	if err != nil {
		return Model{}, fmt.Errorf("controldb: set readers of %q: %w", id, err)
	}
	return got, nil
}

// UpdateModel changes the settings of model m.ID: size class, retention,
// allow_sql and group ("" for none). Epoch, version and start sequence are not settings and
// are left alone.
func (db *DB) UpdateModel(ctx context.Context, m Model) (Model, error) {
	if err := m.validate(); err != nil {
		return Model{}, err
	}
	got, err := scanModel(db.pool.QueryRow(ctx, `UPDATE goal_model SET size_class = $2, retention = $3, allow_sql = $4, model_group = nullif($5, ''), updated_at = now()
		WHERE id = $1 RETURNING `+modelColumns, m.ID, m.SizeClass, m.Retention, m.AllowSQL, m.Group))
	if errors.Is(err, pgx.ErrNoRows) {
		return Model{}, fmt.Errorf("%w: model %q does not exist", model.ErrNotFound, m.ID)
	}
	if err != nil {
		return Model{}, fmt.Errorf("controldb: update model %q: %w", m.ID, err)
	}
	return got, nil
}

// ClaimEpoch records epoch as the writer epoch of model id. It fails with
// model.ErrStaleEpoch when a newer epoch is recorded already.
func (db *DB) ClaimEpoch(ctx context.Context, id string, epoch int64) error {
	var cur int64
	err := db.pool.QueryRow(ctx, `UPDATE goal_model SET writer_epoch = greatest(writer_epoch, $2), updated_at = now()
		WHERE id = $1 RETURNING writer_epoch`, id, epoch).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: model %q does not exist", model.ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("controldb: claim epoch of %q: %w", id, err)
	}
	if cur != epoch {
		return fmt.Errorf("%w: model %q has writer epoch %d, newer than %d", model.ErrStaleEpoch, id, cur, epoch)
	}
	return nil
}

// lockEpoch locks the row of model id for the transaction and checks that
// epoch is still its writer epoch; epoch 0 checks nothing.
func lockEpoch(ctx context.Context, tx pgx.Tx, id string, epoch int64) (Model, error) {
	m, err := scanModel(tx.QueryRow(ctx, `SELECT `+modelColumns+` FROM goal_model WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("%w: model %q does not exist", model.ErrNotFound, id)
	}
	if err != nil {
		return m, err
	}
	if epoch > 0 && m.WriterEpoch > epoch {
		return m, fmt.Errorf("%w: model %q has writer epoch %d, newer than %d", model.ErrStaleEpoch, id, m.WriterEpoch, epoch)
	}
	return m, nil
}

// Table is one row of content_index: a table of a version, with its
// Parquet data files (table data_file), whose union is the table's rows.
type Table struct {
	Name string `json:"name"`
	// ParquetURI is the one Parquet object of a version published before
	// data files (migration 00005), "" after; Files lists it either way.
	ParquetURI string          `json:"parquet_uri,omitempty"`
	SHA256     string          `json:"sha256"` // of that object, or of the file list (snapshot.FilesDigest)
	Rows       int64           `json:"rows"`
	Bytes      int64           `json:"bytes"`  // of the data files
	Schema     json.RawMessage `json:"schema"` // column names and types (snapshot.Column)
	Files      []DataFile      `json:"files"`
}

// DataFile is one Parquet data file of a table: a content-addressed
// object shared by the versions that list it.
type DataFile struct {
	Key    string `json:"key"`
	SHA256 string `json:"sha256"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
}

// Version is one row of model_version with its content index.
type Version struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	// Namespace is the model's block namespace (Model.Namespace): its
	// blocks are BlockKey(Namespace, digest).
	Namespace   string `json:"namespace"`
	SnapshotURI string `json:"snapshot_uri"` // object key of the snapshot file or its block map
	SHA256      string `json:"sha256"`       // of the snapshot file, or the block map's root
	ManifestURI string `json:"manifest_uri"` // object key
	Bytes       int64  `json:"bytes"`        // of the snapshot file
	// SnapshotFormat is FormatBlocks for a block snapshot, FormatFile (or
	// empty, read as FormatFile) for a whole file.
	SnapshotFormat string     `json:"snapshot_format"`
	Uploaded       int64      `json:"uploaded_bytes"` // put in the object store by its publication
	Compaction     bool       `json:"compaction,omitempty"`
	FirstSeq       uint64     `json:"first_seq"` // stream sequence range of its requests
	LastSeq        uint64     `json:"last_seq"`
	RequestCount   int        `json:"request_count"`
	Epoch          int64      `json:"epoch"`
	Created        time.Time  `json:"created"`
	Expired        *time.Time `json:"expired,omitempty"`
	Tables         []Table    `json:"tables"`
	// Lineage is where the version came from (model_version.lineage); nil
	// for versions published before migration 00007.
	Lineage *model.Lineage `json:"lineage,omitempty"`
	// Pins are the names the version is pinned under (version_pin),
	// sorted; a pinned version is never expired by retention.
	Pins []string `json:"pins,omitempty"`
}

// BlockNamespace is v.Namespace, or v.Model when it is not set (a Version
// built by hand): the namespace of v's blocks and data files.
func (v Version) BlockNamespace() string {
	if v.Namespace != "" {
		return v.Namespace
	}
	return v.Model
}

// TableNames are the names of v's tables, in v.Tables' order.
func (v Version) TableNames() []string {
	names := make([]string, len(v.Tables))
	for i, t := range v.Tables {
		names[i] = t.Name
	}
	return names
}

// Snapshot formats of model_version.snapshot_format.
const (
	FormatFile   = "file"   // snapshot_uri is a DuckDB file, sha256 its digest
	FormatBlocks = "blocks" // snapshot_uri is a block map, sha256 its root
)

// RequestRecord is one row of request_log.
type RequestRecord struct {
	RequestID string       `json:"request_id"`
	Model     string       `json:"model"`
	Function  string       `json:"function"`
	Status    model.Status `json:"status"`
	Version   int64        `json:"version,omitempty"` // 0 until applied
	Error     string       `json:"error,omitempty"`
	StreamSeq uint64       `json:"stream_seq"`
	Submitted time.Time    `json:"submitted"`
	Finished  time.Time    `json:"finished,omitzero"`
	// Reads are the versions of other models the request reads, by
	// alias, pinned by the dispatcher (recorded once; nil: none).
	Reads map[string]model.ModelVersion `json:"reads,omitempty"`
}

// PublishVersion records version v with its tables and the final records
// of its requests in one transaction. The model row is locked and v.Epoch
// checked (model.ErrStaleEpoch). It is idempotent: recording a version that
// exists with the same sha256 again succeeds without change, so a
// db-manager that crashed after the commit can retry; the same number with
// another sha256 is model.ErrConflict. Versions are contiguous: v.Version
// must follow the model's current version.
func (db *DB) PublishVersion(ctx context.Context, v Version, reqs []RequestRecord) error {
	if v.Epoch <= 0 {
		return fmt.Errorf("%w: %s version %d carries no writer epoch", model.ErrInvalid, v.Model, v.Version)
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		m, err := lockEpoch(ctx, tx, v.Model, v.Epoch)
		if err != nil {
			return fmt.Errorf("controldb: publish %s version %d: %w", v.Model, v.Version, err)
		}
		var sum string
		err = tx.QueryRow(ctx, `SELECT sha256 FROM model_version WHERE model = $1 AND version = $2`, v.Model, v.Version).Scan(&sum)
		switch {
		case err == nil && sum == v.SHA256:
			return nil
		case err == nil:
			return fmt.Errorf("%w: %s version %d is recorded with sha256 %s, not %s", model.ErrConflict, v.Model, v.Version, sum, v.SHA256)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("controldb: publish %s version %d: %w", v.Model, v.Version, err)
		}
		if v.Version != m.CurrentVersion+1 {
			return fmt.Errorf("%w: %s version %d does not follow the current version %d", model.ErrConflict, v.Model, v.Version, m.CurrentVersion)
		}
		if err := insertVersion(ctx, tx, v); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE goal_model SET current_version = $2, settled_seq = greatest(settled_seq, $3), updated_at = now() WHERE id = $1`, v.Model, v.Version, int64(v.LastSeq)); err != nil {
			return fmt.Errorf("controldb: publish %s version %d: %w", v.Model, v.Version, err)
		}
		return recordRequests(ctx, tx, reqs)
	})
}

// insertVersion inserts the rows of version v: model_version, its
// content_index and data_file rows.
func insertVersion(ctx context.Context, tx pgx.Tx, v Version) error {
	format := v.SnapshotFormat
	if format == "" {
		format = FormatFile
	}
	_, err := tx.Exec(ctx, `INSERT INTO model_version (model, version, snapshot_uri, sha256, manifest_uri, bytes, first_seq, last_seq, request_count, epoch, created_at, snapshot_format, uploaded_bytes, compaction, lineage)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		v.Model, v.Version, v.SnapshotURI, v.SHA256, v.ManifestURI, v.Bytes, int64(v.FirstSeq), int64(v.LastSeq), v.RequestCount, v.Epoch, v.Created, format, v.Uploaded, v.Compaction, v.Lineage)
	if err != nil {
		return fmt.Errorf("controldb: publish %s version %d: %w", v.Model, v.Version, err)
	}
	for _, t := range v.Tables {
		_, err = tx.Exec(ctx, `INSERT INTO content_index (model, version, table_name, parquet_uri, sha256, rows, bytes, schema)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, v.Model, v.Version, t.Name, t.ParquetURI, t.SHA256, t.Rows, t.Bytes, string(t.Schema))
		if err != nil {
			return fmt.Errorf("controldb: publish %s version %d table %q: %w", v.Model, v.Version, t.Name, err)
		}
		for i, f := range t.Files {
			_, err = tx.Exec(ctx, `INSERT INTO data_file (model, version, table_name, ord, key, sha256, rows, bytes)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, v.Model, v.Version, t.Name, i, f.Key, f.SHA256, f.Rows, f.Bytes)
			if err != nil {
				return fmt.Errorf("controldb: publish %s version %d table %q file %s: %w", v.Model, v.Version, t.Name, f.Key, err)
			}
		}
	}
	return nil
}

// PublishRequests records the final records of requests that changed
// nothing (failed and rejected requests: they cut no version) up to stream
// sequence lastSeq of model m, and raises the model's settled sequence to
// lastSeq, in one transaction. epoch fences the write like PublishVersion
// (model.ErrStaleEpoch). It is idempotent.
func (db *DB) PublishRequests(ctx context.Context, m string, epoch int64, lastSeq uint64, reqs []RequestRecord) error {
	if epoch <= 0 {
		return fmt.Errorf("%w: %s requests up to %d carry no writer epoch", model.ErrInvalid, m, lastSeq)
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := lockEpoch(ctx, tx, m, epoch); err != nil {
			return fmt.Errorf("controldb: publish %s requests up to %d: %w", m, lastSeq, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE goal_model SET settled_seq = greatest(settled_seq, $2), updated_at = now() WHERE id = $1`, m, int64(lastSeq)); err != nil {
			return fmt.Errorf("controldb: publish %s requests up to %d: %w", m, lastSeq, err)
		}
		return recordRequests(ctx, tx, reqs)
	})
}

// RecordRequests upserts request records. A final status (applied,
// failed, rejected) is never replaced by queued, so the dispatcher
// recording a request late cannot undo its outcome. A row belongs to the
// request first recorded under its id (model and stream sequence): a
// later request reusing the id never changes it.
func (db *DB) RecordRequests(ctx context.Context, reqs []RequestRecord) error {
	if len(reqs) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return recordRequests(ctx, tx, reqs) })
}

// recordRequests upserts reqs with one statement over arrays per round:
// round k holds the k-th record of each request id (almost always there
// is one round), so the records of one id apply in order and the
// statement never touches a row twice.
func recordRequests(ctx context.Context, tx pgx.Tx, reqs []RequestRecord) error {
	var rounds []requestArrays
	seen := make(map[string]int, len(reqs))
	for _, r := range reqs {
		k := seen[r.RequestID]
		seen[r.RequestID] = k + 1
		if k == len(rounds) {
			rounds = append(rounds, requestArrays{})
		}
		if err := rounds[k].add(r); err != nil {
			return err
		}
	}
	for _, c := range rounds {
		if _, err := tx.Exec(ctx, `INSERT INTO request_log (request_id, model, function, status, version, error, stream_seq, submitted_at, finished_at, reads)
			SELECT id, m, f, st, v, e, seq, sub, fin, r::jsonb
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::text[])
				AS u(id, m, f, st, v, e, seq, sub, fin, r)
			ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, version = excluded.version, error = excluded.error,
				reads = coalesce(request_log.reads, excluded.reads),
				finished_at = excluded.finished_at, submitted_at = least(request_log.submitted_at, excluded.submitted_at)
			WHERE (excluded.status <> 'queued' OR request_log.status = 'queued')
				AND request_log.model = excluded.model AND request_log.stream_seq = excluded.stream_seq`,
			c.id, c.model, c.function, c.status, c.version, c.err, c.seq, c.submitted, c.finished, c.reads); err != nil {
			return fmt.Errorf("controldb: record requests: %w", err)
		}
	}
	return nil
}

// requestArrays are request records as one array per request_log
// column, NULL where a record has no value.
type requestArrays struct {
	id, model, function, status, err []string
	version                          []*int64
	seq                              []int64
	submitted                        []time.Time
	finished                         []*time.Time
	reads                            []*string
}

func (c *requestArrays) add(r RequestRecord) error {
	var version *int64
	if r.Version > 0 {
		version = &r.Version
	}
	var finished *time.Time
	if !r.Finished.IsZero() {
		finished = &r.Finished
	}
	submitted := r.Submitted
	if submitted.IsZero() {
		submitted = time.Now().UTC()
	}
	var reads *string
	if len(r.Reads) > 0 {
		b, err := json.Marshal(r.Reads)
		if err != nil {
			return fmt.Errorf("controldb: record request %s: %w", r.RequestID, err)
		}
		s := string(b)
		reads = &s
	}
	c.id = append(c.id, r.RequestID)
	c.model = append(c.model, r.Model)
	c.function = append(c.function, r.Function)
	c.status = append(c.status, string(r.Status))
	c.version = append(c.version, version)
	c.err = append(c.err, r.Error)
	c.seq = append(c.seq, int64(r.StreamSeq))
	c.submitted = append(c.submitted, submitted)
	c.finished = append(c.finished, finished)
	c.reads = append(c.reads, reads)
	return nil
}

// requestColumns are the request_log columns scanRequest reads.
const requestColumns = "request_id, model, function, status, version, error, stream_seq, submitted_at, finished_at, reads"

// scanRequest reads one request_log row of requestColumns.
func scanRequest(row pgx.Row) (RequestRecord, error) {
	var r RequestRecord
	var version, seq *int64
	var status string
	var finished *time.Time
	var reads []byte
	err := row.Scan(&r.RequestID, &r.Model, &r.Function, &status, &version, &r.Error, &seq, &r.Submitted, &finished, &reads)
	if err == nil && len(reads) > 0 {
		if jerr := json.Unmarshal(reads, &r.Reads); jerr != nil {
			err = fmt.Errorf("request %s: reads: %w", r.RequestID, jerr)
		}
	}
	r.Status = model.Status(status)
	if version != nil {
		r.Version = *version
	}
	if seq != nil {
		r.StreamSeq = uint64(*seq)
	}
	if finished != nil {
		r.Finished = *finished
	}
	return r, err
}

// GetRequest returns the record of request id, or model.ErrNotFound.
func (db *DB) GetRequest(ctx context.Context, id string) (RequestRecord, error) {
	r, err := scanRequest(db.pool.QueryRow(ctx, "SELECT "+requestColumns+" FROM request_log WHERE request_id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("%w: request %q is not recorded (not submitted, or not yet seen by the dispatcher)", model.ErrNotFound, id)
	}
	if err != nil {
		return r, fmt.Errorf("controldb: get request %q: %w", id, err)
	}
	return r, nil
}

// GetRequests returns the records of the request ids that are recorded,
// by id.
func (db *DB) GetRequests(ctx context.Context, ids []string) (map[string]RequestRecord, error) {
	out := map[string]RequestRecord{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT request_id, model, function, status, stream_seq, coalesce(error, ''), reads FROM request_log WHERE request_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("controldb: get requests: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r RequestRecord
		var status string
		var seq int64
		var reads []byte
		if err := rows.Scan(&r.RequestID, &r.Model, &r.Function, &status, &seq, &r.Error, &reads); err != nil {
			return nil, fmt.Errorf("controldb: get requests: %w", err)
		}
		if len(reads) > 0 {
			if err := json.Unmarshal(reads, &r.Reads); err != nil {
				return nil, fmt.Errorf("controldb: get requests: %s: reads: %w", r.RequestID, err)
			}
		}
		r.Status, r.StreamSeq = model.Status(status), uint64(seq)
		out[r.RequestID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("controldb: get requests: %w", err)
	}
	return out, nil
}

// ListRequests returns the records of model m's requests in stream
// order.
func (db *DB) ListRequests(ctx context.Context, m string) ([]RequestRecord, error) {
	rows, err := db.pool.Query(ctx, "SELECT "+requestColumns+" FROM request_log WHERE model = $1 ORDER BY stream_seq", m)
	if err != nil {
		return nil, fmt.Errorf("controldb: list requests of %q: %w", m, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RequestRecord, error) { return scanRequest(r) })
	if err != nil {
		return nil, fmt.Errorf("controldb: list requests of %q: %w", m, err)
	}
	return out, nil
}

const versionColumns = `model, (SELECT coalesce(g.namespace, g.id) FROM goal_model g WHERE g.id = model_version.model), version, snapshot_uri, sha256, manifest_uri, bytes, first_seq, last_seq, request_count, epoch, created_at, expired_at, snapshot_format, uploaded_bytes, compaction, lineage,
	ARRAY(SELECT p.name FROM version_pin p WHERE p.model = model_version.model AND p.version = model_version.version ORDER BY p.name)`

func scanVersion(row pgx.Row) (Version, error) {
	var v Version
	var first, last int64
	err := row.Scan(&v.Model, &v.Namespace, &v.Version, &v.SnapshotURI, &v.SHA256, &v.ManifestURI, &v.Bytes, &first, &last, &v.RequestCount, &v.Epoch, &v.Created, &v.Expired, &v.SnapshotFormat, &v.Uploaded, &v.Compaction, &v.Lineage, &v.Pins)
	v.FirstSeq, v.LastSeq = uint64(first), uint64(last)
	return v, err
}

// tables fills in the content index of vs.
func (db *DB) tables(ctx context.Context, m string, vs []Version) error {
	return fillTables(ctx, db.pool, m, vs)
}

// querier is what fillTables reads with: the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// fillTables fills in the content index of vs, versions of model m.
func fillTables(ctx context.Context, q querier, m string, vs []Version) error {
	if len(vs) == 0 {
		return nil
	}
	idx := map[int64]int{}
	nums := make([]int64, len(vs))
	for i, v := range vs {
		idx[v.Version], nums[i] = i, v.Version
	}
	rows, err := q.Query(ctx, `SELECT version, table_name, parquet_uri, sha256, rows, bytes, schema
		FROM content_index WHERE model = $1 AND version = ANY($2) ORDER BY version, table_name`, m, nums)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var n int64
		var t Table
		var schema []byte
		if err := rows.Scan(&n, &t.Name, &t.ParquetURI, &t.SHA256, &t.Rows, &t.Bytes, &schema); err != nil {
			return err
		}
		t.Schema = schema
		vs[idx[n]].Tables = append(vs[idx[n]].Tables, t)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = q.Query(ctx, `SELECT version, table_name, key, sha256, rows, bytes
		FROM data_file WHERE model = $1 AND version = ANY($2) ORDER BY version, table_name, ord`, m, nums)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var n int64
		var name string
		var f DataFile
		if err := rows.Scan(&n, &name, &f.Key, &f.SHA256, &f.Rows, &f.Bytes); err != nil {
			return err
		}
		ts := vs[idx[n]].Tables
		for i := range ts {
			if ts[i].Name == name {
				ts[i].Files = append(ts[i].Files, f)
			}
		}
	}
	return rows.Err()
}

// GetVersion returns version n of model m with its tables; n = 0 means
// the latest. Expired versions and versions never published are
// model.ErrNotFound.
func (db *DB) GetVersion(ctx context.Context, m string, n int64) (Version, error) {
	q := `SELECT ` + versionColumns + ` FROM model_version WHERE model = $1 AND expired_at IS NULL AND ($2::bigint = 0 OR version = $2::bigint) ORDER BY version DESC LIMIT 1`
	v, err := scanVersion(db.pool.QueryRow(ctx, q, m, n))
	if errors.Is(err, pgx.ErrNoRows) {
		if n == 0 {
			return v, fmt.Errorf("%w: model %q has no published version yet", model.ErrNotFound, m)
		}
		return v, fmt.Errorf("%w: model %q has no version %d (never published, or expired by retention; `teactl versions %s` lists those kept)", model.ErrNotFound, m, n, m)
	}
	if err != nil {
		return v, fmt.Errorf("controldb: get %s version %d: %w", m, n, err)
	}
	vs := []Version{v}
	if err := db.tables(ctx, m, vs); err != nil {
		return v, fmt.Errorf("controldb: get %s version %d: %w", m, n, err)
	}
	return vs[0], nil
}

// LatestVersion returns the number of model m's latest unexpired version:
// one index lookup, where GetVersion also reads the version's tables and
// data files (the reader asks it at every query). No version is
// model.ErrNotFound, as for GetVersion.
func (db *DB) LatestVersion(ctx context.Context, m string) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT version FROM model_version WHERE model = $1 AND expired_at IS NULL ORDER BY version DESC LIMIT 1`, m).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: model %q has no published version yet", model.ErrNotFound, m)
	}
	if err != nil {
		return 0, fmt.Errorf("controldb: latest version of %s: %w", m, err)
	}
	return n, nil
}

// ListVersions returns the versions of model m, oldest first, with their
// tables; expired ones only when includeExpired.
func (db *DB) ListVersions(ctx context.Context, m string, includeExpired bool) ([]Version, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+versionColumns+` FROM model_version WHERE model = $1 AND ($2::boolean OR expired_at IS NULL) ORDER BY version`, m, includeExpired)
	if err != nil {
		return nil, fmt.Errorf("controldb: list versions of %q: %w", m, err)
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Version, error) { return scanVersion(r) })
	if err == nil {
		err = db.tables(ctx, m, vs)
	}
	if err != nil {
		return nil, fmt.Errorf("controldb: list versions of %q: %w", m, err)
	}
	return vs, nil
}

// ExpireVersions marks all but the newest keep unexpired versions of model
// m expired, except pinned ones (Pin), and returns how many it marked.
// epoch fences the write like PublishVersion; epoch 0 means the caller is
// not a writer (teactl gc) and uses the model's current epoch.
func (db *DB) ExpireVersions(ctx context.Context, m string, keep int, epoch int64) (int, error) {
	var n int64
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		mdl, err := lockEpoch(ctx, tx, m, epoch)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE model_version SET expired_at = now()
			WHERE model = $1 AND expired_at IS NULL AND version <= $2::bigint - $3::bigint
				AND NOT EXISTS (SELECT 1 FROM version_pin p WHERE p.model = model_version.model AND p.version = model_version.version)`, m, mdl.CurrentVersion, keep)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("controldb: expire versions of %q: %w", m, err)
	}
	return int(n), nil
}

// ExpiredMapsWithin returns the block maps (snapshot_uri of FormatBlocks
// versions) of model m's versions marked expired less than d ago by
// Postgres's clock (so the caller's clock does not matter). It reads only
// that column: retention asks after every publication, and a model
// keeps every version expired within the block grace.
func (db *DB) ExpiredMapsWithin(ctx context.Context, m string, d time.Duration) ([]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT snapshot_uri FROM model_version
		WHERE model = $1 AND snapshot_format = $2 AND expired_at > now() - $3::bigint * interval '1 microsecond'`, m, FormatBlocks, d.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("controldb: block maps of %q expired within %s: %w", m, d, err)
	}
	uris, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("controldb: block maps of %q expired within %s: %w", m, d, err)
	}
	return uris, nil
}

// OldestRetained returns the lowest version number of model m that is not
// expired; ok is false when m has none.
func (db *DB) OldestRetained(ctx context.Context, m string) (version int64, ok bool, err error) {
	var v *int64
	if err := db.pool.QueryRow(ctx, `SELECT min(version) FROM model_version WHERE model = $1 AND expired_at IS NULL`, m).Scan(&v); err != nil {
		return 0, false, fmt.Errorf("controldb: oldest retained version of %q: %w", m, err)
	}
	if v == nil {
		return 0, false, nil
	}
	return *v, true, nil
}

// LiveDataFiles returns the keys of the Parquet data files listed by the
// unexpired versions of the models of block namespace m (m itself and its
// forks, ForkModel) and by their versions expired less than grace ago
// (Postgres's clock).
func (db *DB) LiveDataFiles(ctx context.Context, m string, grace time.Duration) (map[string]bool, error) {
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT f.key FROM data_file f
		JOIN model_version v USING (model, version)
		WHERE f.model IN (SELECT id FROM goal_model WHERE coalesce(namespace, id) = $1)
		AND (v.expired_at IS NULL OR v.expired_at > now() - $2::bigint * interval '1 microsecond')`, m, grace.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("controldb: live Parquet of %q: %w", m, err)
	}
	uris, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("controldb: live Parquet of %q: %w", m, err)
	}
	live := make(map[string]bool, len(uris))
	for _, u := range uris {
		live[u] = true
	}
	return live, nil
}
