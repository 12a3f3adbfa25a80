package dbmanager

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/snapshot"
)

// cut is one row of _teatree.outbox: a version whose snapshot is captured
// on local disk: Path is the capture (blocks.Capture.Dir) in the version's
// directory, SHA256 the block map's root, Bytes the file's size.
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
	Compaction   bool // cut from a compact copy of the live file
}

// cutTable is a table of a cut with the last sequence that changed it, the
// last that did more than append rows, the last that created or dropped
// it, and its data files (archive.go;
// publish fills in Table.Files from them).
type cutTable struct {
	snapshot.Table
	ChangedSeq  uint64     `json:"changed_seq"`
	ModifiedSeq uint64     `json:"modified_seq"`
	ReplacedSeq uint64     `json:"replaced_seq"`
	Data        []dataFile `json:"data"`
	NextRowID   int64      `json:"next_rowid"`
}

// publishLoop publishes pending outbox rows and cuts new versions whenever
// the position moved, until ctx ends. A publication has no request to
// fail: every error is retried with backoff (retryBackoff) except a fatal
// one (a stale epoch, ErrFatal), which ends the process.
func (m *Manager) publishLoop(ctx context.Context) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		err := m.retryBackoff(ctx, "publication paused, retrying", func(v verdict) bool { return v != fatal }, func() error {
			return m.publishPending(ctx)
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fatalError("publish", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.committed:
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
	err := m.db.QueryRowContext(ctx, `SELECT version, first_seq, last_seq, request_count, path, sha256, bytes, tables::VARCHAR, created, coalesce(compaction, false)
		FROM _teatree.outbox WHERE published IS NULL ORDER BY version LIMIT 1`).
		Scan(&c.Version, &c.FirstSeq, &c.LastSeq, &c.RequestCount, &c.Path, &c.SHA256, &c.Bytes, &tables, &c.Created, &c.Compaction)
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
//
// The snapshot is the live file itself (see freeze): its block map, a
// capture of the blocks the previous version lacks, and a Parquet file of
// every table changed since the previous version, in the version's
// directory, before the outbox row points at them.
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
			return false, fmt.Errorf("dbmanager: record requests %d to %d: %w", lastCut+1, upTo, err)
		}
		return true, nil
	}
	version := max(lastVersion, m.model.CurrentVersion) + 1
	ctx, span := m.tracer.Start(ctx, "cut version", trace.WithAttributes(attribute.String("teatree.model", m.cfg.Model), attribute.Int64("teatree.version", version)))
	defer span.End()
	base, baseLast, err := m.baseCut(ctx, version-1)
	if err != nil {
		return false, err
	}
	// A directory of this version can only be left by a cut that crashed
	// before it was recorded.
	dir := filepath.Join(m.cfg.versionsDir(), strconv.FormatInt(version, 10))
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	recorded := false
	defer func() {
		if !recorded {
			os.RemoveAll(dir)
		}
	}()
	c := cut{Version: version, FirstSeq: lastCut + 1, Created: time.Now().UTC()}
	sp := newSplit()
	conn, capt, err := m.freeze(ctx, dir, lastCut, &c, sp)
	if err != nil {
		return false, fmt.Errorf("dbmanager: snapshot version %d: %w", version, err)
	}
	defer conn.Close()
	defer capt.Release() // publish reopens it; on error the directory goes
	inTx := true
	defer func() {
		if inTx { // ends the read transaction freeze began
			conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	// The blocks go up while the data files are written.
	up := m.startUpload(ctx, version, capt)
	defer up.stop() // before the capture is released
	arch := archiver{conn: conn, dir: dir, namespace: m.namespace, rowidsMoved: c.Compaction, profiles: m.cfg.Profiles != "off", log: m.log}
	for i := range c.Tables {
		t := &c.Tables[i]
		b, ok := base[t.Name]
		if err := arch.table(ctx, t, b, ok, baseLast); err != nil {
			return false, fmt.Errorf("dbmanager: version %d: archive table %s: %w", version, t.Name, err)
		}
	}
	sp.step("parquet_profile")
	if err := up.wait(); errors.Is(err, blocks.ErrCorrupt) {
		return false, fmt.Errorf("dbmanager: version %d: %w: %w", version, ErrFatal, err)
	} else if err != nil { // publish uploads them again
		m.log.Warn("blocks not uploaded at the cut; the publication uploads them", "version", version, "err", err)
		up = nil
	}
	sp.step("blocks_wait")
	inTx = false
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return false, fmt.Errorf("dbmanager: version %d: end read transaction: %w", version, err)
	}
	if err := writeMap(filepath.Join(dir, mapFile), capt.Map); err != nil {
		return false, err
	}
	tj, err := json.Marshal(c.Tables)
	if err != nil {
		return false, fmt.Errorf("dbmanager: %w", err)
	}
	// Not interrupted by ctx: a cancelled statement may still commit, and
	// its row would then name a removed directory.
	_, err = conn.ExecContext(context.WithoutCancel(ctx), `INSERT INTO _teatree.outbox (version, first_seq, last_seq, request_count, path, sha256, bytes, tables, created, compaction)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		version, c.FirstSeq, c.LastSeq, c.RequestCount, c.Path, c.SHA256, c.Bytes, string(tj), c.Created, c.Compaction)
	if err != nil {
		return false, fmt.Errorf("dbmanager: record cut %d: %w", version, err)
	}
	recorded = true
	sp.step("outbox")
	m.lastMap = capt.Map
	m.cutSplit, m.cutSplitVersion = sp.attrs, version
	m.uploadedAtCut = up
	st := capt.Stats
	if st.Mismatch > 0 {
		m.log.Warn("scrub found blocks changed under an unchanged DuckDB checksum; they are in this version", "version", version, "blocks", st.Mismatch)
	}
	m.log.Debug("version cut", "version", version, "last_seq", c.LastSeq, "requests", c.RequestCount, "bytes", c.Bytes,
		"blocks", st.Blocks, "changed", st.Changed, "hashed", st.Hashed, "full_map", st.Full, "took", st.Duration)
	return true, nil
}

// baseCut returns the tables of cut v (the previous version) by name and
// its last sequence, from the outbox; none when the outbox does not hold
// it (the first version, a file restored from a snapshot, a file of a
// release before data files): every table is then archived whole.
func (m *Manager) baseCut(ctx context.Context, v int64) (map[string]cutTable, uint64, error) {
	var last uint64
	var tables string
	err := m.db.QueryRowContext(ctx, `SELECT last_seq, tables::VARCHAR FROM _teatree.outbox WHERE version = ? AND published IS NOT NULL`, v).Scan(&last, &tables)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("dbmanager: read outbox: %w", err)
	}
	var ts []cutTable
	if err := json.Unmarshal([]byte(tables), &ts); err != nil {
		return nil, 0, fmt.Errorf("dbmanager: outbox row %d: %w", v, err)
	}
	base := make(map[string]cutTable, len(ts))
	for _, t := range ts {
		base[t.Name] = t
	}
	return base, last, nil
}

// mapFile is the block map of a cut, in the version's directory.
const mapFile = "blocks.json"

func writeMap(path string, bm *blocks.Map) error {
	data, err := json.Marshal(bm)
	if err != nil {
		return fmt.Errorf("dbmanager: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("dbmanager: %w", err)
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dbmanager: write %s: %w", path, err)
	}
	return nil
}

func readMap(path string) (*blocks.Map, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	return blocks.ParseMap(data)
}

// freeze makes the live file the snapshot of version c.Version: with the
// applier held off, it drops the bookkeeping Postgres already holds,
// CHECKPOINTs (so the file is the whole state, no WAL), compacts the file
// when it is due, captures the blocks the previous cut lacks, and begins a
// read transaction on a new connection pinned to that state; it fills in c
// from it and lets the applier go on. The caller ends the transaction and
// closes the connection.
func (m *Manager) freeze(ctx context.Context, dir string, lastCut uint64, c *cut, sp *split) (*sql.Conn, *blocks.Capture, error) {
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	sp.step("wait_applier")
	conn, err := m.checkpoint(ctx, lastCut)
	if err != nil {
		return nil, nil, err
	}
	sp.step("checkpoint")
	due, err := m.compactionDue(ctx, conn)
	if due {
		conn.Close()
		if err = m.compact(ctx); err != nil {
			return nil, nil, err
		}
		c.Compaction = true
		sp.step("compact")
		if conn, err = m.db.Conn(ctx); err != nil {
			return nil, nil, fmt.Errorf("connection: %w", err)
		}
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	capt, err := blocks.NewCapture(ctx, m.live, m.lastMap, dir)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	sp.step("capture")
	c.Path, c.SHA256, c.Bytes = capt.Dir(), capt.Map.Root().String(), capt.Map.Size()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		capt.Close()
		conn.Close()
		return nil, nil, fmt.Errorf("begin: %w", err)
	}
	if err := m.readCut(ctx, conn, lastCut, c); err != nil {
		conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		capt.Close()
		conn.Close()
		return nil, nil, err
	}
	return conn, capt, nil
}

// checkpoint drops the published bookkeeping (what a published version or
// settled range put in Postgres' request log is not kept in the file, so
// not in the snapshots: a snapshot carries the bookkeeping of its own
// requests only) and CHECKPOINTs, on a new connection it returns.
func (m *Manager) checkpoint(ctx context.Context, lastCut uint64) (*sql.Conn, error) {
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connection: %w", err)
	}
	if err := dropPublished(ctx, conn, lastCut); err != nil {
		conn.Close()
		return nil, fmt.Errorf("drop published bookkeeping: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "CHECKPOINT"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return conn, nil
}

// compactionDue reports whether the checkpointed live file has at least
// Config.CompactFree of its blocks free, and at least CompactMinBytes.
func (m *Manager) compactionDue(ctx context.Context, conn *sql.Conn) (bool, error) {
	if m.cfg.CompactFree <= 0 {
		return false, nil
	}
	var total, free, size int64
	if err := conn.QueryRowContext(ctx, `SELECT total_blocks, free_blocks, block_size FROM pragma_database_size() WHERE database_name = current_database()`).Scan(&total, &free, &size); err != nil {
		return false, fmt.Errorf("database size: %w", err)
	}
	return total > 0 && free*size >= m.cfg.CompactMinBytes && float64(free) >= m.cfg.CompactFree*float64(total), nil
}

// compact replaces the checkpointed live file by a compact copy of it
// (snapshot.Take, with blocks of Config.BlockSize: a model made with
// another block size moves to it), verified in a separate read-only instance, and reopens
// it. The applier is held off. A crash before the rename leaves the old
// file (the copy is removed at the next compaction), after it the new one.
func (m *Manager) compact(ctx context.Context) error {
	start := time.Now()
	tmp := m.cfg.dbPath() + ".compact"
	if stale, err := filepath.Glob(tmp + "*"); err == nil { // a compaction that crashed
		for _, f := range stale {
			os.Remove(f)
		}
	}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connection: %w", err)
	}
	info, err := snapshot.Take(ctx, conn, tmp, m.cfg.BlockSize, func(ctx context.Context, c *sql.Conn) error {
		var pos uint64
		return c.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&pos)
	})
	conn.Close()
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	got, err := snapshot.Describe(ctx, tmp)
	if err == nil {
		err = snapshot.SameRows(info.Tables, got)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: the copy does not match the live file: %w: %w", ErrFatal, err)
	}
	before, _ := m.live.Stat()
	m.closeDB()
	// The copy holds every commit; a WAL left by the old file (its close
	// checkpoints, so normally none) must not be replayed onto it.
	for _, f := range []string{m.cfg.dbPath() + ".wal", m.cfg.dbPath() + ".wal.checkpoint"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("compact: %w: %w", ErrFatal, err)
		}
	}
	if err := os.Rename(tmp, m.cfg.dbPath()); err != nil {
		return fmt.Errorf("compact: %w: %w", ErrFatal, err)
	}
	if err := syncDir(m.cfg.dir()); err != nil {
		return fmt.Errorf("compact: %w: %w", ErrFatal, err)
	}
	if err := m.openDB(ctx); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	m.log.Info("live file compacted", "bytes_before", before.Size(), "bytes", info.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// dropPublished deletes, in one transaction, the records of requests up to
// stream sequence upTo, and the outbox rows and settled ranges published
// before the newest (numbering continues from those).
func dropPublished(ctx context.Context, conn *sql.Conn, upTo uint64) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM _teatree.applied WHERE seq <= ?`,
		`DELETE FROM _teatree.refused WHERE seq <= ?`,
		`DELETE FROM _teatree.outbox WHERE published IS NOT NULL AND last_seq <= ? AND version < (SELECT max(version) FROM _teatree.outbox)`,
		`DELETE FROM _teatree.settled WHERE published IS NOT NULL AND last_seq <= ? AND first_seq < (SELECT max(first_seq) FROM _teatree.settled)`,
	} {
		if _, err := tx.ExecContext(ctx, q, upTo); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// readCut fills in the position, request count and tables of c in conn's
// transaction. DuckDB starts a database's transaction at its first read,
// so the first statement pins the state.
func (m *Manager) readCut(ctx context.Context, conn *sql.Conn, lastCut uint64, c *cut) error {
	if err := conn.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&c.LastSeq); err != nil {
		return fmt.Errorf("read position: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM _teatree.applied WHERE seq > ? AND seq <= ?", lastCut, c.LastSeq).Scan(&c.RequestCount); err != nil {
		return fmt.Errorf("count requests: %w", err)
	}
	changed, modified, replaced := map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	// A row of a release before these were recorded counts as replaced.
	rows, err := conn.QueryContext(ctx, "SELECT table_name, seq, coalesce(modified, seq), coalesce(replaced, seq) FROM _teatree.table_change")
	if err != nil {
		return fmt.Errorf("read table changes: %w", err)
	}
	for rows.Next() {
		var t string
		var seq, mod, rep uint64
		if err := rows.Scan(&t, &seq, &mod, &rep); err != nil {
			rows.Close()
			return fmt.Errorf("read table changes: %w", err)
		}
		changed[t], modified[t], replaced[t] = seq, mod, rep
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read table changes: %w", err)
	}
	tables, err := snapshot.DescribeCurrent(ctx, conn)
	if err != nil {
		return err
	}
	c.Tables = make([]cutTable, len(tables))
	for i, t := range tables {
		c.Tables[i] = cutTable{Table: t, ChangedSeq: max(changed[t.Name], changed["*"]), ModifiedSeq: max(modified[t.Name], modified["*"]), ReplacedSeq: replaced[t.Name]}
	}
	return nil
}

// publish publishes cut c. Every step is idempotent: objects that exist are
// not uploaded again, Postgres rows are inserted once, notifications are
// deduplicated by JetStream.
func (m *Manager) publish(ctx context.Context, c cut) error {
	start := time.Now()
	ctx, span := m.tracer.Start(ctx, "publish version", trace.WithAttributes(attribute.String("teatree.model", m.cfg.Model), attribute.Int64("teatree.version", c.Version)))
	defer span.End()
	dir := filepath.Dir(c.Path)
	if strings.HasSuffix(c.Path, ".duckdb") {
		return m.settleLostCut(ctx, c, "a whole-file cut of an older release")
	}
	bm, err := readMap(filepath.Join(dir, mapFile))
	if errors.Is(err, os.ErrNotExist) {
		return m.settleLostCut(ctx, c, "its block map is missing")
	}
	if err != nil {
		return fmt.Errorf("dbmanager: version %d: block map: %w: %w", c.Version, ErrFatal, err)
	}
	src, err := blocks.ReopenCapture(ctx, c.Path, bm)
	if errors.Is(err, model.ErrNotFound) {
		return m.settleLostCut(ctx, c, "its captured blocks are missing")
	}
	if err != nil {
		return fmt.Errorf("dbmanager: version %d: captured blocks: %w: %w", c.Version, ErrFatal, err)
	}
	defer src.Close()
	sp := newSplit()
	prev, err := m.publishedMap(ctx, c.Version-1)
	if err != nil {
		return err
	}
	lin, err := m.lineage(ctx, c)
	if err != nil {
		return err
	}
	mf := snapshot.Manifest{
		Model: m.cfg.Model, Version: c.Version, Created: c.Created, Epoch: m.epoch, Namespace: m.forkNamespace(),
		FirstSeq: c.FirstSeq, LastSeq: c.LastSeq, RequestCount: c.RequestCount, Format: controldb.FormatBlocks, Compaction: c.Compaction,
		Snapshot: snapshot.File{Key: snapshot.BlockMapKey(m.cfg.Model, c.Version), Bytes: c.Bytes, SHA256: c.SHA256},
		Lineage:  &lin,
	}
	var todo []tableFile
	for _, t := range c.Tables {
		for _, f := range t.Data {
			t.Files = append(t.Files, f.DataFile)
			if f.Local != "" {
				mf.ParquetWritten += f.Bytes
				todo = append(todo, tableFile{t.Name, f})
			}
		}
		mf.Tables = append(mf.Tables, t.Table)
	}
	// The blocks (with the block map after them) and the new data files
	// with their profiles go up concurrently; the first failure cancels
	// the rest and nothing below runs, so no version names a missing
	// object. The data files' directories are synced once, together
	// (objstore.Batch), before the manifest.
	var up blocks.UploadStats
	var uploaded atomic.Int64
	files := objstore.NewBatch(m.store)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(publishParallel)
	pre := m.uploadedAtCut
	m.uploadedAtCut = nil
	g.Go(func() error {
		// Upload verifies every block it puts against the map; the blocks
		// it skips are the previous version's, verified when it was
		// published.
		var err error
		if pre.covers(c.Version, bm, m.blockStore) {
			up = pre.stats
		} else if up, err = m.blockStore.Upload(gctx, bm, src, prev); err != nil {
			if errors.Is(err, blocks.ErrCorrupt) {
				err = fmt.Errorf("%w: %w", ErrFatal, err)
			}
			return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
		}
		if err := blocks.PutMap(gctx, m.store, mf.Snapshot.Key, bm); err != nil {
			return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
		}
		return nil
	})
	for _, tf := range todo {
		g.Go(func() error {
			if err := m.checkParquetRows(gctx, tf.table, tf.file); err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				return fmt.Errorf("dbmanager: version %d: %w: %w", c.Version, ErrFatal, err)
			}
			n, err := m.upload(gctx, files, tf.file.Key, tf.file.Local, tf.file.Bytes)
			if err != nil {
				return err
			}
			uploaded.Add(n + m.uploadProfile(gctx, files, tf.table, tf.file))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := files.Sync(ctx); err != nil {
		return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
	}
	sp.step("blocks_and_data_files")
	sp.attrs = append(sp.attrs, slog.Group("blocks_summed", "read", up.Read.Round(time.Millisecond), "encode", up.Encode.Round(time.Millisecond), "put", up.Put.Round(time.Millisecond)))
	mf.Uploaded = up.Bytes + uploaded.Load()
	if err := m.putManifest(ctx, mf); err != nil {
		return err
	}
	sp.step("manifest")
	published := time.Now().UTC()
	records, notes, err := m.requestsOf(ctx, c.FirstSeq, c.LastSeq, c.Version, published)
	if err != nil {
		return err
	}
	v := controldb.Version{
		Model: m.cfg.Model, Version: c.Version, SnapshotURI: mf.Snapshot.Key, SHA256: c.SHA256, ManifestURI: snapshot.ManifestKey(m.cfg.Model, c.Version),
		Bytes: c.Bytes, FirstSeq: c.FirstSeq, LastSeq: c.LastSeq, RequestCount: c.RequestCount, Epoch: m.epoch, Created: c.Created,
		SnapshotFormat: controldb.FormatBlocks, Uploaded: mf.Uploaded, Compaction: c.Compaction, Lineage: &lin,
	}
	for _, t := range mf.Tables {
		schema, _ := json.Marshal(t.Columns)
		ct := controldb.Table{Name: t.Name, SHA256: snapshot.FilesDigest(t.Files), Rows: t.Rows, Schema: schema}
		for _, f := range t.Files {
			ct.Files = append(ct.Files, controldb.DataFile{Key: f.Key, SHA256: f.SHA256, Rows: f.Rows, Bytes: f.Bytes})
			ct.Bytes += f.Bytes
		}
		v.Tables = append(v.Tables, ct)
	}
	if err := m.ctl.PublishVersion(ctx, v, records); err != nil {
		return fmt.Errorf("dbmanager: record version %d: %w", c.Version, err)
	}
	m.lastPublished, m.lastPublishedVersion = bm, c.Version
	sp.step("postgres")
	if err := m.notify.PublishAll(ctx, notes); err != nil {
		return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
	}
	sp.step("notify")
	if _, err := m.db.ExecContext(ctx, "UPDATE _teatree.outbox SET published = now() WHERE version = ?", c.Version); err != nil {
		return fmt.Errorf("dbmanager: mark version %d published: %w", c.Version, err)
	}
	os.RemoveAll(dir)
	m.meter.versions.Add(ctx, 1)
	args := []any{"version", c.Version, "requests", c.RequestCount, "last_seq", c.LastSeq, "bytes", c.Bytes,
		"uploaded_bytes", mf.Uploaded, "blocks_uploaded", up.Uploaded, "took", time.Since(start).Round(time.Millisecond)}
	if m.cutSplitVersion == c.Version { // cut by this process: how long each step of the cut took
		args = append(args, slog.Group("cut", m.cutSplit...))
	}
	m.log.Info("version published", append(args, slog.Group("publish", sp.attrs...))...)
	m.afterPublish(ctx, c)
	return nil
}

// forkNamespace is the manifest's namespace: the block namespace when it
// is not the model's own (a fork), else empty.
func (m *Manager) forkNamespace() string {
	if m.namespace == m.cfg.Model {
		return ""
	}
	return m.namespace
}

// publishedMap returns the block map of published version v, whose blocks
// are all in the store: the one this process published last, else read
// from the store; nil when v is 0 or a whole-file version.
func (m *Manager) publishedMap(ctx context.Context, v int64) (*blocks.Map, error) {
	if v <= 0 {
		return nil, nil
	}
	if m.lastPublished != nil && m.lastPublishedVersion == v {
		return m.lastPublished, nil
	}
	pv, err := m.ctl.GetVersion(ctx, m.cfg.Model, v)
	if errors.Is(err, model.ErrNotFound) || (err == nil && pv.SnapshotFormat != controldb.FormatBlocks) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dbmanager: version %d: %w", v, err)
	}
	root, err := blocks.ParseDigest(pv.SHA256)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: version %d: %w", v, err)
	}
	bm, err := blocks.GetMap(ctx, m.store, pv.SnapshotURI, root)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: version %d: %w", v, err)
	}
	return bm, nil
}

// settleLostCut settles an outbox row whose local capture cannot be
// published (why says what is wrong with it): if Postgres has the version
// (it was published before the row was marked) its notifications are sent
// again and the row is marked published, else it is dropped and the state, still in the live file, is
// cut again.
func (m *Manager) settleLostCut(ctx context.Context, c cut, why string) error {
	v, err := m.ctl.GetVersion(ctx, m.cfg.Model, c.Version)
	switch {
	case err == nil:
		// Its notifications may not have gone out: they are deduplicated.
		_, notes, err := m.requestsOf(ctx, c.FirstSeq, c.LastSeq, c.Version, v.Created)
		if err != nil {
			return err
		}
		if err := m.notify.PublishAll(ctx, notes); err != nil {
			return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
		}
		_, err = m.db.ExecContext(ctx, "UPDATE _teatree.outbox SET published = now() WHERE version = ?", c.Version)
	case errors.Is(err, model.ErrNotFound):
		_, err = m.db.ExecContext(ctx, "DELETE FROM _teatree.outbox WHERE version = ?", c.Version)
	default:
		return fmt.Errorf("dbmanager: version %d: %w", c.Version, err)
	}
	if err != nil {
		return fmt.Errorf("dbmanager: settle the cut of version %d: %w", c.Version, err)
	}
	os.RemoveAll(filepath.Dir(c.Path))
	m.log.Warn("cut not publishable, settled", "version", c.Version, "why", why)
	return nil
}

// checkParquetRows compares the rows of an exported data file of table
// (its footer) with the rows the writer counted in the same transaction.
func (m *Manager) checkParquetRows(ctx context.Context, table string, f dataFile) error {
	var rows int64
	if err := m.db.QueryRowContext(ctx, "SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata("+duck.Literal(f.Local)+")").Scan(&rows); err != nil {
		return fmt.Errorf("read %s: %w", f.Local, err)
	}
	if rows != f.Rows {
		return fmt.Errorf("the data file %s of table %s has %d rows, the writer counted %d", filepath.Base(f.Local), table, rows, f.Rows)
	}
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
			if !m.cfg.KeepStaged { // kept for teactl model verify; the dispatcher's sweep deletes them
				m.deleteStaged(ctx, id)
			}
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
	// Blocks and data files keep their grace: a reader may be pulling or
	// reading a version that expires now. Versions expire (and their
	// snapshot objects go) after every publication; the sweep of the
	// namespace's data files, blocks and modules, which lists every one of
	// them and deletes nothing younger than the grace, at most every
	// sweepEvery.
	run := retention.Expire
	if m.lastSweep.IsZero() || time.Since(m.lastSweep) >= sweepEvery(m.cfg.BlockGrace) {
		run, m.lastSweep = retention.Run, time.Now()
	}
	res, err := run(ctx, m.ctl, m.store, m.cfg.Model, mdl.Retention, m.epoch, m.cfg.BlockGrace)
	if err != nil {
		m.log.Warn("retention", "err", err)
		return
	}
	if res.Versions > 0 || res.Objects > 0 || res.Blocks > 0 || res.Modules > 0 {
		m.log.Info("retention", "expired_versions", res.Versions, "deleted_objects", res.Objects, "deleted_blocks", res.Blocks, "freed_block_bytes", res.BlockBytes, "deleted_modules", res.Modules)
	}
}

// blockUpload is the upload of a cut's blocks that runs while the cut
// writes its data files (startUpload).
type blockUpload struct {
	version  int64
	root     blocks.Digest
	encoding string
	done     chan struct{}
	cancel   context.CancelFunc
	stats    blocks.UploadStats
	err      error
	finished time.Time
}

// startUpload starts uploading the blocks of the capture of version to
// the block store, from the capture, against the previous version's map.
// The blocks are content-addressed and durable when Upload returns, so an
// upload whose cut is never recorded only leaves blocks that no version
// references, which block GC deletes after its grace period.
func (m *Manager) startUpload(ctx context.Context, version int64, capt *blocks.Capture) *blockUpload {
	u := &blockUpload{version: version, root: capt.Map.Root(), encoding: m.blockStore.Encoding, done: make(chan struct{})}
	prev, err := m.publishedMap(ctx, version-1)
	if err != nil {
		u.err, u.cancel = err, func() {}
		close(u.done)
		return u
	}
	ctx, u.cancel = context.WithCancel(ctx)
	go func() {
		defer close(u.done)
		u.stats, u.err = m.blockStore.Upload(ctx, capt.Map, capt, prev)
		u.finished = time.Now()
	}()
	return u
}

// wait waits for the upload to end and returns its error.
func (u *blockUpload) wait() error {
	if u == nil {
		return nil
	}
	<-u.done
	return u.err
}

// stop cancels the upload if it is still running and waits for it.
func (u *blockUpload) stop() {
	if u != nil {
		u.cancel()
		<-u.done
	}
}

// covers reports whether the upload put every block of map bm of version
// recently enough that no GC can have deleted one of them since: within
// the store's ReuseAge, the age up to which Upload itself reuses a stored
// block (well under GC's grace period).
func (u *blockUpload) covers(version int64, bm *blocks.Map, s *blocks.Store) bool {
	if u == nil || u.wait() != nil || u.version != version || u.root != bm.Root() || u.encoding != s.Encoding || bm.Encoding != s.Encoding {
		return false
	}
	return time.Since(u.finished) < cmp.Or(s.ReuseAge, blocks.DefaultReuseAge)
}

// publishParallel bounds the concurrent uploads of a publication: the
// block upload (itself blocks.DefaultParallel blocks at a time) and the
// new data files with their profiles.
const publishParallel = 4

// tableFile is a new data file of a table, to upload.
type tableFile struct {
	table string
	file  dataFile
}

// sweepEvery is how often the db-manager sweeps the object store after a
// publication: a tenth of the block grace, at most a minute.
func sweepEvery(grace time.Duration) time.Duration { return min(grace/10, time.Minute) }

// upload puts the local file at key in s and returns the bytes put, unless an object of the same size is
// there already (a resumed publication). An object of another size is never
// overwritten.
func (m *Manager) upload(ctx context.Context, s objstore.Store, key, path string, size int64) (int64, error) {
	st, err := s.Stat(ctx, key)
	switch {
	case err == nil && st.Size == size:
		return 0, nil
	case err == nil:
		return 0, fmt.Errorf("dbmanager: %s exists with %d bytes, want %d: %w: %w", key, st.Size, size, ErrFatal, model.ErrConflict)
	case !errors.Is(err, model.ErrNotFound):
		return 0, fmt.Errorf("dbmanager: stat %s: %w", key, err)
	}
	if err := objstore.PutFile(ctx, s, key, path); err != nil {
		return 0, fmt.Errorf("dbmanager: upload %s: %w", key, err)
	}
	m.meter.bytes.Add(ctx, size)
	return size, nil
}

// uploadProfile uploads the column profile of data file f of table, if
// it has one, and returns the bytes it put. A profile is not data: a
// failure is logged and the version is published without it (readers say
// the file has no profile).
func (m *Manager) uploadProfile(ctx context.Context, s objstore.Store, table string, f dataFile) int64 {
	if f.Profile == "" {
		return 0
	}
	st, err := os.Stat(f.Profile)
	if err == nil {
		var n int64
		if n, err = m.upload(ctx, s, snapshot.ProfileKey(m.namespace, table, f.SHA256), f.Profile, st.Size()); err == nil {
			return n
		}
	}
	m.log.Warn("data file published without its column profile", "table", table, "file", f.SHA256, "err", err)
	return 0
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
		return fmt.Errorf("dbmanager: mark requests %d to %d published: %w", first, last, err)
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
