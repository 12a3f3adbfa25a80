package dbmanager

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/snapshot"
)

// cut is one row of _teatree.outbox: a version whose snapshot file is
// complete on local disk.
type cut struct {
	Version      int64
	FirstSeq     uint64
	LastSeq      uint64
	RequestCount int
	Path         string
	SHA256       string
	Bytes        int64
	Tables       []cutTable
	Created      time.Time
}

// cutTable is a table of a cut with the last sequence that changed it.
type cutTable struct {
	snapshot.Table
	ChangedSeq uint64 `json:"changed_seq"`
}

// publishLoop publishes pending outbox rows and cuts new versions whenever
// the position moved, until ctx ends. Errors of the object store or
// Postgres are retried with backoff; a stale epoch ends the process.
func (m *Manager) publishLoop(ctx context.Context) error {
	delay := time.Duration(0)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		err := m.publishPending(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, model.ErrStaleEpoch) || errors.Is(err, ErrFatal):
			return fmt.Errorf("dbmanager: publish: %w: %w", ErrFatal, err)
		case err != nil:
			delay = min(max(2*delay, 500*time.Millisecond), 30*time.Second)
			m.log.Warn("publication paused, retrying", "err", err, "in", delay)
		default:
			delay = 0
		}
		var retry <-chan time.Time
		if delay > 0 {
			retry = time.After(delay)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.committed:
			if delay > 0 {
				<-retry
			}
		case <-retry:
		case <-tick.C:
		}
	}
}

// publishPending publishes every unpublished cut, then cuts and publishes
// new versions while the position is ahead of the last cut.
func (m *Manager) publishPending(ctx context.Context) error {
	for ctx.Err() == nil {
		c, ok, err := m.nextUnpublished(ctx)
		if err != nil {
			return err
		}
		if ok {
			if err := m.publish(ctx, c); err != nil {
				return err
			}
			continue
		}
		first, last, ok, err := m.nextSettled(ctx)
		if err != nil {
			return err
		}
		if ok {
			if err := m.publishSettled(ctx, first, last); err != nil {
				return err
			}
			continue
		}
		made, err := m.cut(ctx)
		if err != nil || !made {
			return err
		}
	}
	return nil
}

func (m *Manager) nextUnpublished(ctx context.Context) (cut, bool, error) {
	var c cut
	var tables string
	err := m.db.QueryRowContext(ctx, `SELECT version, first_seq, last_seq, request_count, path, sha256, bytes, tables::VARCHAR, created
		FROM _teatree.outbox WHERE published IS NULL ORDER BY version LIMIT 1`).
		Scan(&c.Version, &c.FirstSeq, &c.LastSeq, &c.RequestCount, &c.Path, &c.SHA256, &c.Bytes, &tables, &c.Created)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("dbmanager: read outbox: %w", err)
	}
	if err := json.Unmarshal([]byte(tables), &c.Tables); err != nil {
		return c, false, fmt.Errorf("dbmanager: outbox row %d: %w", c.Version, err)
	}
	return c, true, nil
}

// nextSettled returns the oldest unpublished range of the request stream
// that changed nothing (see cut).
func (m *Manager) nextSettled(ctx context.Context) (first, last uint64, ok bool, err error) {
	err = m.db.QueryRowContext(ctx, `SELECT first_seq, last_seq FROM _teatree.settled WHERE published IS NULL ORDER BY first_seq LIMIT 1`).Scan(&first, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("dbmanager: read settled ranges: %w", err)
	}
	return first, last, true, nil
}

// cut takes a snapshot of the current state as the next version and
// records it in the outbox. It reports false when no request was recorded
// since the last cut. A version must change something: when none of the
// requests since the last cut was applied (all failed or were rejected),
// no snapshot is taken and the range is recorded in _teatree.settled, to
// be published to the request log and notified without a version.
func (m *Manager) cut(ctx context.Context) (bool, error) {
	var lastVersion int64
	var lastCut uint64
	if err := m.db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0), greatest(coalesce(max(last_seq), 0), (SELECT coalesce(max(last_seq), 0) FROM _teatree.settled)) FROM _teatree.outbox`).Scan(&lastVersion, &lastCut); err != nil {
		return false, fmt.Errorf("dbmanager: read outbox: %w", err)
	}
	if m.position.Load() <= lastCut {
		return false, nil
	}
	var upTo uint64
	var applied int
	if err := m.db.QueryRowContext(ctx, `SELECT last_seq, (SELECT count(*) FROM _teatree.applied WHERE seq > ? AND seq <= last_seq AND status = 'applied') FROM _teatree.position`, lastCut).Scan(&upTo, &applied); err != nil {
		return false, fmt.Errorf("dbmanager: read position: %w", err)
	}
	if applied == 0 {
		if _, err := m.db.ExecContext(ctx, `INSERT INTO _teatree.settled VALUES (?, ?, NULL)`, lastCut+1, upTo); err != nil {
			return false, classify(fmt.Errorf("dbmanager: record requests %d to %d: %w", lastCut+1, upTo, err))
		}
		return true, nil
	}
	version := max(lastVersion, m.model.CurrentVersion) + 1
	ctx, span := m.tracer.Start(ctx, "cut version", trace.WithAttributes(attribute.String("teatree.model", m.cfg.Model), attribute.Int64("teatree.version", version)))
	defer span.End()
	// A directory of this version can only be left by a cut that crashed
	// before it was recorded.
	dir := filepath.Join(m.cfg.versionsDir(), strconv.FormatInt(version, 10))
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("dbmanager: connection: %w", err)
	}
	defer conn.Close()
	var pos uint64
	changed := map[string]uint64{}
	var count int
	info, err := snapshot.Take(ctx, conn, filepath.Join(dir, m.cfg.Model+".duckdb"), func(ctx context.Context, c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&pos); err != nil {
			return fmt.Errorf("dbmanager: read position: %w", err)
		}
		if err := c.QueryRowContext(ctx, "SELECT count(*) FROM _teatree.applied WHERE seq > ? AND seq <= ?", lastCut, pos).Scan(&count); err != nil {
			return fmt.Errorf("dbmanager: count requests: %w", err)
		}
		rows, err := c.QueryContext(ctx, "SELECT table_name, seq FROM _teatree.table_change")
		if err != nil {
			return fmt.Errorf("dbmanager: read table changes: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var t string
			var seq uint64
			if err := rows.Scan(&t, &seq); err != nil {
				return fmt.Errorf("dbmanager: read table changes: %w", err)
			}
			changed[t] = seq
		}
		return rows.Err()
	})
	if err != nil {
		os.RemoveAll(dir)
		return false, fmt.Errorf("dbmanager: snapshot version %d: %w", version, err)
	}
	tables := make([]cutTable, len(info.Tables))
	for i, t := range info.Tables {
		tables[i] = cutTable{Table: t, ChangedSeq: max(changed[t.Name], changed["*"])}
	}
	tj, err := json.Marshal(tables)
	if err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	_, err = conn.ExecContext(ctx, `INSERT INTO _teatree.outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
		version, lastCut+1, pos, count, info.Path, info.SHA256, info.Bytes, string(tj), time.Now().UTC())
	if err != nil {
		os.RemoveAll(dir)
		return false, classify(fmt.Errorf("dbmanager: record cut %d: %w", version, err))
	}
	m.log.Debug("version cut", "version", version, "last_seq", pos, "requests", count, "bytes", info.Bytes)
	return true, nil
}

// publish publishes cut c. Every step is idempotent: objects that exist are
// not uploaded again, Postgres rows are inserted once, notifications are
// deduplicated by JetStream.
func (m *Manager) publish(ctx context.Context, c cut) error {
	start := time.Now()
	ctx, span := m.tracer.Start(ctx, "publish version", trace.WithAttributes(attribute.String("teatree.model", m.cfg.Model), attribute.Int64("teatree.version", c.Version)))
	defer span.End()
	mf := snapshot.Manifest{
		Model: m.cfg.Model, Version: c.Version, Created: c.Created, Epoch: m.epoch,
		FirstSeq: c.FirstSeq, LastSeq: c.LastSeq, RequestCount: c.RequestCount,
		Snapshot: snapshot.File{Key: snapshot.SnapshotKey(m.cfg.Model, c.Version), Bytes: c.Bytes, SHA256: c.SHA256},
	}
	if _, err := os.Stat(c.Path); err != nil {
		return fmt.Errorf("dbmanager: version %d: local snapshot: %w: %w", c.Version, ErrFatal, err)
	}
	if err := m.upload(ctx, mf.Snapshot.Key, c.Path, c.Bytes); err != nil {
		return err
	}
	// Verify in a separate read-only instance before anything points at it.
	got, err := snapshot.Describe(ctx, c.Path)
	if err != nil {
		return err
	}
	if err := sameCounts(c.Tables, got); err != nil {
		return fmt.Errorf("dbmanager: version %d: %w: %w", c.Version, ErrFatal, err)
	}
	tables, err := m.archive(ctx, c)
	if err != nil {
		return err
	}
	mf.Tables = tables
	if err := m.putManifest(ctx, mf); err != nil {
		return err
	}
	published := time.Now().UTC()
	records, notes, err := m.requestsOf(ctx, c.FirstSeq, c.LastSeq, c.Version, published)
	if err != nil {
		return err
	}
	v := controldb.Version{
		Model: m.cfg.Model, Version: c.Version, SnapshotURI: mf.Snapshot.Key, SHA256: c.SHA256, ManifestURI: snapshot.ManifestKey(m.cfg.Model, c.Version),
		Bytes: c.Bytes, FirstSeq: c.FirstSeq, LastSeq: c.LastSeq, RequestCount: c.RequestCount, Epoch: m.epoch, Created: c.Created,
	}
	for _, t := range tables {
		schema, _ := json.Marshal(t.Columns)
		v.Tables = append(v.Tables, controldb.Table{Name: t.Name, ParquetURI: t.Parquet.Key, SHA256: t.Parquet.SHA256, Rows: t.Rows, Bytes: t.Parquet.Bytes, Schema: schema})
	}
	if err := m.ctl.PublishVersion(ctx, v, records); err != nil {
		return fmt.Errorf("dbmanager: record version %d: %w", c.Version, err)
	}
	if err := m.notify.PublishAll(ctx, notes); err != nil {
		return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
	}
	if _, err := m.db.ExecContext(ctx, "UPDATE _teatree.outbox SET published = now() WHERE version = ?", c.Version); err != nil {
		return classify(fmt.Errorf("dbmanager: mark version %d published: %w", c.Version, err))
	}
	os.RemoveAll(filepath.Dir(c.Path))
	m.meter.versions.Add(ctx, 1)
	m.log.Info("version published", "version", c.Version, "requests", c.RequestCount, "last_seq", c.LastSeq, "bytes", c.Bytes, "took", time.Since(start).Round(time.Millisecond))
	m.afterPublish(ctx, c)
	return nil
}

// afterPublish deletes the staged payloads the version made redundant and
// runs retention. Failures are logged: both are repeated later.
func (m *Manager) afterPublish(ctx context.Context, c cut) {
	// From the previous version on: the payloads of requests published
	// without a version (_teatree.settled) go with this one.
	rows, err := m.db.QueryContext(ctx, `SELECT request_id FROM _teatree.applied WHERE payload IS NOT NULL AND seq <= ?
		AND seq > coalesce((SELECT max(last_seq) FROM _teatree.outbox WHERE version < ?), 0)`, c.LastSeq, c.Version)
	if err == nil {
		var ids []string
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				ids = append(ids, id)
			}
		}
		rows.Close()
		for _, id := range ids {
			m.deleteStaged(ctx, id)
		}
	}
	m.published++
	if m.published%m.cfg.GCInterval != 0 {
		return
	}
	mdl, err := m.ctl.GetModel(ctx, m.cfg.Model)
	if err != nil {
		m.log.Warn("retention", "err", err)
		return
	}
	// Parquet grace 0: this process is the model's only publisher and is
	// not publishing now. Blocks keep their grace: a reader may be pulling
	// a version that expires now.
	res, err := retention.Run(ctx, m.ctl, m.store, m.cfg.Model, mdl.Retention, m.epoch, 0, m.cfg.BlockGrace)
	if err != nil {
		m.log.Warn("retention", "err", err)
		return
	}
	if res.Versions > 0 || res.Objects > 0 || res.Blocks > 0 {
		m.log.Info("retention", "expired_versions", res.Versions, "deleted_objects", res.Objects, "deleted_blocks", res.Blocks, "freed_block_bytes", res.BlockBytes)
	}
}

// upload puts the local file at key unless an object of the same size is
// there already (a resumed publication). An object of another size is never
// overwritten.
func (m *Manager) upload(ctx context.Context, key, path string, size int64) error {
	st, err := m.store.Stat(ctx, key)
	switch {
	case err == nil && st.Size == size:
		return nil
	case err == nil:
		return fmt.Errorf("dbmanager: %s exists with %d bytes, want %d: %w: %w", key, st.Size, size, ErrFatal, model.ErrConflict)
	case !errors.Is(err, model.ErrNotFound):
		return fmt.Errorf("dbmanager: stat %s: %w", key, err)
	}
	if err := objstore.PutFile(ctx, m.store, key, path); err != nil {
		return fmt.Errorf("dbmanager: upload %s: %w", key, err)
	}
	m.meter.bytes.Add(ctx, size)
	return nil
}

// archive returns the Parquet file of every table of c: the previous
// version's when the table did not change since, else a fresh export,
// uploaded under its content address.
func (m *Manager) archive(ctx context.Context, c cut) ([]snapshot.Table, error) {
	prev := map[string]controldb.Table{}
	var prevLast uint64
	if pv, err := m.ctl.GetVersion(ctx, m.cfg.Model, c.Version-1); err == nil {
		prevLast = pv.LastSeq
		for _, t := range pv.Tables {
			prev[t.Name] = t
		}
	} else if !errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("dbmanager: previous version: %w", err)
	}
	var sdb *sql.DB
	defer func() {
		if sdb != nil {
			sdb.Close()
		}
	}()
	out := make([]snapshot.Table, len(c.Tables))
	for i, t := range c.Tables {
		out[i] = t.Table
		if p, ok := prev[t.Name]; ok && prevLast > 0 && t.ChangedSeq <= prevLast && p.Rows == t.Rows {
			out[i].Parquet = snapshot.File{Key: p.ParquetURI, Bytes: p.Bytes, SHA256: p.SHA256}
			continue
		}
		if sdb == nil {
			var err error
			sdb, err = duck.Open(ctx, c.Path, duck.Options{ReadOnly: true, Threads: m.cfg.Threads, MemoryLimit: m.cfg.MemoryLimit, AllowedDirs: []string{filepath.Dir(c.Path)}})
			if err != nil {
				return nil, fmt.Errorf("dbmanager: open snapshot %d: %w", c.Version, err)
			}
		}
		path := filepath.Join(filepath.Dir(c.Path), t.Name+".parquet")
		f, err := snapshot.ExportParquet(ctx, sdb, t.Name, path)
		if err != nil {
			return nil, err
		}
		f.Key = snapshot.ParquetKey(m.cfg.Model, t.Name, f.SHA256)
		if err := m.upload(ctx, f.Key, path, f.Bytes); err != nil {
			return nil, err
		}
		os.Remove(path)
		out[i].Parquet = f
	}
	return out, nil
}

func (m *Manager) putManifest(ctx context.Context, mf snapshot.Manifest) error {
	key := snapshot.ManifestKey(mf.Model, mf.Version)
	if _, err := m.store.Stat(ctx, key); err == nil {
		return nil // written by an earlier attempt; never overwritten
	} else if !errors.Is(err, model.ErrNotFound) {
		return fmt.Errorf("dbmanager: stat %s: %w", key, err)
	}
	data, err := json.MarshalIndent(mf, "", "  ")
	if err != nil {
		return fmt.Errorf("dbmanager: manifest: %w", err)
	}
	if err := m.store.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("dbmanager: upload %s: %w", key, err)
	}
	return nil
}

// publishSettled publishes the requests of stream sequences first to last,
// which changed nothing: their request log records and notifications,
// without a version. Like publish it is idempotent and resumed after a
// crash.
func (m *Manager) publishSettled(ctx context.Context, first, last uint64) error {
	records, notes, err := m.requestsOf(ctx, first, last, 0, time.Now().UTC())
	if err != nil {
		return err
	}
	if err := m.ctl.PublishRequests(ctx, m.cfg.Model, m.epoch, last, records); err != nil {
		return fmt.Errorf("dbmanager: record requests %d to %d: %w", first, last, err)
	}
	if err := m.notify.PublishAll(ctx, notes); err != nil {
		return fmt.Errorf("dbmanager: requests %d to %d: %w", first, last, err)
	}
	if _, err := m.db.ExecContext(ctx, "UPDATE _teatree.settled SET published = now() WHERE first_seq = ?", first); err != nil {
		return classify(fmt.Errorf("dbmanager: mark requests %d to %d published: %w", first, last, err))
	}
	m.log.Info("requests published without a version: none changed anything", "first_seq", first, "last_seq", last, "requests", len(records)+len(notes))
	return nil
}

// requestsOf returns the request log records and the notifications of the
// requests of stream sequences first to last, in stream order, as part of
// version (0: none). Rejected requests are not notified again (the
// dispatcher announced them), except those refused for a taken id, which
// only the db-manager can tell; these get no record either (the record of
// their id is the first request's).
func (m *Manager) requestsOf(ctx context.Context, first, last uint64, version int64, published time.Time) ([]controldb.RequestRecord, []model.Notification, error) {
	rows, err := m.db.QueryContext(ctx, `SELECT request_id, function, status, coalesce(error, ''), seq, queued, applied, false
		FROM _teatree.applied WHERE seq BETWEEN $1 AND $2
		UNION ALL SELECT request_id, function, 'rejected', error, seq, queued, applied, true
		FROM _teatree.refused WHERE seq BETWEEN $1 AND $2 ORDER BY seq`, first, last)
	if err != nil {
		return nil, nil, fmt.Errorf("dbmanager: requests %d to %d: %w", first, last, err)
	}
	defer rows.Close()
	var records []controldb.RequestRecord
	var notes []model.Notification
	for rows.Next() {
		n := model.Notification{Model: m.cfg.Model, Version: version, Published: published}
		var status string
		var queued sql.NullTime
		var refused bool
		if err := rows.Scan(&n.RequestID, &n.Function, &status, &n.Error, &n.Seq, &queued, &n.Applied, &refused); err != nil {
			return nil, nil, fmt.Errorf("dbmanager: requests %d to %d: %w", first, last, err)
		}
		n.Status, n.Queued = model.Status(status), queued.Time
		if refused {
			n.Version = 0
			notes = append(notes, n)
			continue
		}
		records = append(records, controldb.RequestRecord{RequestID: n.RequestID, Model: n.Model, Function: n.Function, Status: n.Status,
			Version: n.Version, Error: n.Error, StreamSeq: n.Seq, Submitted: n.Queued, Finished: n.Applied})
		if n.Status != model.StatusRejected {
			notes = append(notes, n)
		}
	}
	return records, notes, rows.Err()
}

// sameCounts compares the writer's view of a snapshot with a re-read.
func sameCounts(want []cutTable, got []snapshot.Table) error {
	if len(want) != len(got) {
		return fmt.Errorf("snapshot holds %d tables, the writer saw %d", len(got), len(want))
	}
	for i := range want {
		if want[i].Name != got[i].Name || want[i].Rows != got[i].Rows {
			return fmt.Errorf("snapshot table %s has %d rows, the writer saw %s with %d", got[i].Name, got[i].Rows, want[i].Name, want[i].Rows)
		}
	}
	return nil
}
