// Package snapshot describes the immutable versions of a model and the
// object-store keys they are published under:
//
//	models/<model>/versions/<N>/blocks.json      the block map of the snapshot (package blocks)
//	models/<ns>/blocks/<sha256>                  the blocks, shared by all versions
//	models/<model>/versions/<N>/manifest.json    the manifest
//	models/<ns>/tables/<table>/<sha256>.parquet  the Parquet archive (content-addressed)
//	models/<model>/versions/<N>/<model>.duckdb   a whole-file snapshot (versions of releases before block snapshots)
//
// <ns> is the model's block namespace: the model itself, or for a fork
// the namespace of its source (controldb.Model.Namespace), so that a fork
// and its source share blocks and data files. A version's own objects
// (manifest, block map) are always under its model.
//
// Fetch writes a version's snapshot file from either form. Take writes a
// compact copy of a whole database (the db-manager's compaction): DuckDB's
// COPY FROM DATABASE (SCHEMA) and one INSERT per table into a freshly
// attached file inside one read transaction, so it is consistent (snapshot
// isolation), has no free blocks and no WAL once detached, in storage
// version StorageVersion, whatever the engine's default.
package snapshot

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// StorageVersion is the DuckDB storage version snapshot files are written
// with (ATTACH … (STORAGE_VERSION …)): the oldest DuckDB 1.5 can write, so
// that the widest range of DuckDB CLIs opens a pulled snapshot (file header
// version 64, DuckDB 0.10 and later; docs/decisions.md lists the releases
// measured). It is also DuckDB 1.5's default for new files, so it matches a
// model's live file.
const StorageVersion = "v0.10.2"

// SnapshotKey is the object key of version v's snapshot file.
func SnapshotKey(m string, v int64) string {
	return "models/" + m + "/versions/" + strconv.FormatInt(v, 10) + "/" + m + ".duckdb"
}

// BlockMapKey is the object key of version v's block map (a snapshot in
// the block store, package blocks).
func BlockMapKey(m string, v int64) string {
	return "models/" + m + "/versions/" + strconv.FormatInt(v, 10) + "/blocks.json"
}

// ManifestKey is the object key of version v's manifest.
func ManifestKey(m string, v int64) string {
	return "models/" + m + "/versions/" + strconv.FormatInt(v, 10) + "/manifest.json"
}

// ParquetKey is the content-addressed object key of a table's Parquet
// file in block namespace ns.
func ParquetKey(ns, table, sha string) string {
	return "models/" + ns + "/tables/" + table + "/" + sha + ".parquet"
}

// ProfileKey is the object key of the column profile (package profile) of
// the table's Parquet data file with that sha256 in block namespace ns,
// stored next to it.
func ProfileKey(ns, table, sha string) string {
	return "models/" + ns + "/tables/" + table + "/" + sha + ".profile"
}

// ModuleKey is the content-addressed object key, in block namespace m (the
// model, or a fork's source), of the
// WebAssembly module with that digest (sha256 of its bytes, hex): never
// overwritten with other bytes.
func ModuleKey(m, digest string) string { return ModulesPrefix(m) + digest + ".wasm" }

// ModulesPrefix is the key prefix of model m's modules (ModuleKey).
func ModulesPrefix(m string) string { return "modules/" + m + "/" }

// Manifest describes one published version. It is stored as manifest.json
// next to the snapshot.
type Manifest struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	// Namespace is the block namespace of the model's blocks and data
	// files (ParquetKey, blocks.BlockKey) when it is not Model: a fork's.
	Namespace    string    `json:"namespace,omitempty"`
	Created      time.Time `json:"created"`
	Epoch        int64     `json:"epoch"`     // writer lease epoch of the publisher
	FirstSeq     uint64    `json:"first_seq"` // TEATREE_REQUESTS sequences covered, inclusive
	LastSeq      uint64    `json:"last_seq"`
	RequestCount int       `json:"request_count"`
	// Snapshot is the DuckDB file (Format "file" or empty), or for Format
	// "blocks" its block map: Key the map, Bytes the file's size, SHA256
	// the map's root digest (package blocks).
	Snapshot File   `json:"snapshot"`
	Format   string `json:"snapshot_format,omitempty"`
	Uploaded int64  `json:"uploaded_bytes,omitempty"` // bytes this version put in the object store
	// ParquetWritten is the bytes of the data files the cut wrote, some
	// perhaps the same as stored ones (content-addressed, not uploaded again).
	ParquetWritten int64   `json:"parquet_written_bytes,omitempty"`
	Compaction     bool    `json:"compaction,omitempty"` // cut from a compact copy of the live file
	Tables         []Table `json:"tables"`
	// Lineage is where the version came from (absent in versions
	// published before issue 17).
	Lineage *model.Lineage `json:"lineage,omitempty"`
}

// File is an object with its size in bytes and sha256 (hex).
type File struct {
	Key    string `json:"key"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Table describes one table of a version. Its rows are the union of its
// Parquet data files (at least one; an empty table has one file of no
// rows, so its schema is readable).
type Table struct {
	Name    string     `json:"name"`
	Rows    int64      `json:"rows"`
	Columns []Column   `json:"columns"`
	Files   []DataFile `json:"files,omitempty"`
	// Parquet is the one Parquet file of a table in a manifest written
	// before data files; DataFiles lists it.
	Parquet File `json:"parquet,omitzero"`
}

// DataFile is one Parquet data file of a table: a content-addressed object
// (ParquetKey) shared by the versions that list it.
type DataFile struct {
	Key    string `json:"key"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// DataFiles returns the data files of t: Files, or for a manifest written
// before data files the one Parquet file (its rows the table's).
func (t Table) DataFiles() []DataFile {
	if len(t.Files) > 0 || t.Parquet.Key == "" {
		return t.Files
	}
	return []DataFile{{Key: t.Parquet.Key, Rows: t.Rows, Bytes: t.Parquet.Bytes, SHA256: t.Parquet.SHA256}}
}

// FilesDigest is the digest recorded for a table's list of data files: the
// sha256 (hex) of their sha256s, each followed by a newline, in order.
// Two versions whose table has the same digest list the same files.
func FilesDigest(files []DataFile) string {
	h := sha256.New()
	for _, f := range files {
		io.WriteString(h, f.SHA256+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Column is a column name and its DuckDB type, and how the table's
// Parquet archive holds it when not as that type (ExportColumns).
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Parquet is the DuckDB type read_parquet returns for the column when
	// it is not Type, e.g. VARCHAR for a HUGEINT.
	Parquet string `json:"parquet_type,omitempty"`
	// Encoding, set with Parquet, is how the value is encoded and the SQL
	// expression over the read_parquet column that restores it, e.g.
	// `HUGEINT as decimal text; CAST("h" AS HUGEINT)`.
	Encoding string `json:"encoding,omitempty"`
}

// Info is what Take found in the snapshot it wrote.
type Info struct {
	Path   string
	Bytes  int64
	SHA256 string
	Tables []Table // user tables (schema main) with rows and columns; Parquet empty
}

// Take writes a consistent, compact copy of the whole database conn is
// connected to (every schema, bookkeeping included; no free blocks) into
// the new file path (which must not exist, in a directory DuckDB may
// write to), with blocks of blockSize bytes (0: DuckDB's 256 KiB). Inside
// the read transaction, before anything is copied, it
// calls inTx so the caller can read its own bookkeeping from the same
// snapshot. The file is fsynced before Take returns. On error no file is
// left at path.
func Take(ctx context.Context, conn *sql.Conn, path string, blockSize int, inTx func(context.Context, *sql.Conn) error) (info Info, err error) {
	var src string
	if err := conn.QueryRowContext(ctx, "SELECT current_database()").Scan(&src); err != nil {
		return info, fmt.Errorf("snapshot: current database: %w", err)
	}
	// Attached databases are visible to every connection of the instance,
	// and a transaction that scans the catalog (duckdb_tables(), …) while
	// the snapshot is attached keeps it open after DETACH until that
	// transaction ends. So each Take uses its own alias (DuckDB invalidates
	// the whole instance when one transaction sees two databases under one
	// name) and its own file (a lingering handle blocks re-attaching a
	// path), waits until the file is closed (checkpointed, no WAL) and
	// renames it into place.
	n := takes.Add(1)
	alias := "teatree_snapshot_" + strconv.FormatUint(n, 10)
	tmp := path + ".tmp" + strconv.FormatUint(n, 10)
	for _, f := range []string{path, tmp, tmp + ".wal", tmp + ".wal.checkpoint"} { // leftovers of a crashed process
		os.Remove(f)
	}
	opts := "STORAGE_VERSION " + duck.Literal(StorageVersion)
	if blockSize > 0 {
		opts += ", BLOCK_SIZE " + strconv.Itoa(blockSize)
	}
	if _, err := conn.ExecContext(ctx, "ATTACH "+duck.Literal(tmp)+" AS "+alias+" ("+opts+")"); err != nil {
		return info, fmt.Errorf("snapshot: attach %s: %w", tmp, err)
	}
	attached := true
	defer func() {
		if attached {
			conn.ExecContext(context.WithoutCancel(ctx), "DETACH "+alias)
		}
		if err != nil {
			os.Remove(tmp)
			os.Remove(tmp + ".wal")
			os.Remove(path)
		}
	}()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return info, fmt.Errorf("snapshot: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	// DuckDB starts a database's transaction lazily, at its first read:
	// inTx must read from the source database to pin the snapshot.
	if err := inTx(ctx, conn); err != nil {
		return info, err
	}
	tables, err := describe(ctx, conn, src)
	if err != nil {
		return info, err
	}
	if err := copyAll(ctx, conn, src, alias); err != nil {
		return info, err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return info, fmt.Errorf("snapshot: commit: %w", err)
	}
	committed = true
	if _, err := conn.ExecContext(ctx, "DETACH "+alias); err != nil {
		return info, fmt.Errorf("snapshot: detach: %w", err)
	}
	attached = false
	if err := waitClosed(ctx, tmp); err != nil {
		return info, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	if err := syncFile(path); err != nil {
		return info, err
	}
	sum, size, err := FileSHA256(path)
	if err != nil {
		return info, err
	}
	return Info{Path: path, Bytes: size, SHA256: sum, Tables: tables}, nil
}

// copyAll copies database src into the attached database dst inside the
// current transaction: the whole catalog (COPY FROM DATABASE … (SCHEMA)),
// then the rows table by table, parents before their foreign-key children,
// generated columns left to the target.
func copyAll(ctx context.Context, conn *sql.Conn, src, dst string) error {
	if _, err := conn.ExecContext(ctx, "COPY FROM DATABASE "+duck.Ident(src)+" TO "+dst+" (SCHEMA)"); err != nil {
		return fmt.Errorf("snapshot: copy schema: %w", err)
	}
	rows, err := conn.QueryContext(ctx, `SELECT schema_name, table_name, sql FROM duckdb_tables()
		WHERE database_name = ? AND NOT temporary ORDER BY schema_name, table_name`, src)
	if err != nil {
		return fmt.Errorf("snapshot: list tables: %w", err)
	}
	var tables [][3]string
	for rows.Next() {
		var t [3]string
		if err := rows.Scan(&t[0], &t[1], &t[2]); err != nil {
			rows.Close()
			return fmt.Errorf("snapshot: list tables: %w", err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("snapshot: list tables: %w", err)
	}
	tables, err = parentsFirst(ctx, conn, src, tables)
	if err != nil {
		return err
	}
	for _, t := range tables {
		name := duck.Ident(t[0]) + "." + duck.Ident(t[1])
		cols, err := storedColumns(ctx, conn, src, t[0], t[1], t[2])
		if err != nil {
			return err
		}
		q := "INSERT INTO " + dst + "." + name + " " + cols + " SELECT " + strings.Trim(cols, "()") + " FROM " + duck.Ident(src) + "." + name
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("snapshot: copy %s.%s: %w", t[0], t[1], err)
		}
	}
	return nil
}

// parentsFirst orders tables (schema, name, sql) so that a table comes
// after the tables its foreign keys reference: the rows of a child cannot
// be inserted before its parent's.
func parentsFirst(ctx context.Context, conn *sql.Conn, db string, tables [][3]string) ([][3]string, error) {
	rows, err := conn.QueryContext(ctx, `SELECT schema_name, table_name, referenced_table FROM duckdb_constraints()
		WHERE database_name = ? AND constraint_type = 'FOREIGN KEY'`, db)
	if err != nil {
		return nil, fmt.Errorf("snapshot: foreign keys: %w", err)
	}
	defer rows.Close()
	parents := map[[2]string][]string{}
	for rows.Next() {
		var schema, name, parent string
		if err := rows.Scan(&schema, &name, &parent); err != nil {
			return nil, fmt.Errorf("snapshot: foreign keys: %w", err)
		}
		if parent != name {
			parents[[2]string{schema, name}] = append(parents[[2]string{schema, name}], parent)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshot: foreign keys: %w", err)
	}
	if len(parents) == 0 {
		return tables, nil
	}
	out := make([][3]string, 0, len(tables))
	done := map[[2]string]bool{}
	for len(out) < len(tables) {
		progress := false
		for _, t := range tables {
			key := [2]string{t[0], t[1]}
			if done[key] {
				continue
			}
			ready := true
			for _, p := range parents[key] {
				ready = ready && done[[2]string{t[0], p}]
			}
			if ready {
				out, done[key], progress = append(out, t), true, true
			}
		}
		if !progress { // a cycle DuckDB would not let us create: keep the rest in order
			for _, t := range tables {
				if !done[[2]string{t[0], t[1]}] {
					out = append(out, t)
				}
			}
			break
		}
	}
	return out, nil
}

// storedColumns returns the column list "(a, b)" of the columns of table
// schema.name to copy: all but the generated ones, which DuckDB computes
// and refuses values for. DuckDB's catalog functions do not flag generated
// columns; the table's CREATE statement (createSQL, as DuckDB prints it)
// names them "<column> <type> GENERATED ALWAYS AS".
func storedColumns(ctx context.Context, conn *sql.Conn, db, schema, name, createSQL string) (string, error) {
	rows, err := conn.QueryContext(ctx, `SELECT column_name, data_type, column_default IS NOT NULL FROM duckdb_columns()
		WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index`, db, schema, name)
	if err != nil {
		return "", fmt.Errorf("snapshot: columns of %s.%s: %w", schema, name, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c, typ string
		var hasDefault bool
		if err := rows.Scan(&c, &typ, &hasDefault); err != nil {
			return "", fmt.Errorf("snapshot: columns of %s.%s: %w", schema, name, err)
		}
		generated := hasDefault && (strings.Contains(createSQL, c+" "+typ+" GENERATED ALWAYS AS") ||
			strings.Contains(createSQL, duck.Ident(c)+" "+typ+" GENERATED ALWAYS AS"))
		if !generated {
			cols = append(cols, duck.Ident(c))
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("snapshot: columns of %s.%s: %w", schema, name, err)
	}
	return "(" + strings.Join(cols, ", ") + ")", nil
}

// waitClosed waits until the detached database file path is closed:
// DuckDB checkpoints a database when its last user lets go of it and then
// removes its WAL. A transaction of another connection that read the
// catalog while the snapshot was attached holds it until it ends.
func waitClosed(ctx context.Context, path string) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = time.Millisecond, 100*time.Millisecond
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		if _, err := os.Stat(path + ".wal"); err == nil {
			return struct{}{}, fmt.Errorf("snapshot: %s still has a WAL %s after detach: a transaction that saw it attached has not ended", path, closeTimeout)
		}
		return struct{}{}, nil
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(closeTimeout))
	return err
}

// closeTimeout bounds waitClosed.
const closeTimeout = time.Minute

// takes numbers the snapshots taken by this process (aliases and
// temporary file names).
var takes atomic.Uint64

// describe lists the user tables of database db (schema main) with their
// row counts and columns, in the current transaction.
func describe(ctx context.Context, conn *sql.Conn, db string) ([]Table, error) {
	rows, err := conn.QueryContext(ctx, `SELECT table_name, estimated_size FROM duckdb_tables()
		WHERE database_name = ? AND schema_name = 'main' AND NOT temporary ORDER BY table_name`, db)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list tables: %w", err)
	}
	var tables []Table
	for rows.Next() {
		var t Table
		var est int64
		if err := rows.Scan(&t.Name, &est); err != nil {
			rows.Close()
			return nil, fmt.Errorf("snapshot: list tables: %w", err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshot: list tables: %w", err)
	}
	for i := range tables {
		t := &tables[i]
		q := "SELECT count(*) FROM " + duck.Ident(db) + ".main." + duck.Ident(t.Name)
		if err := conn.QueryRowContext(ctx, q).Scan(&t.Rows); err != nil {
			return nil, fmt.Errorf("snapshot: count %s: %w", t.Name, err)
		}
		cols, err := conn.QueryContext(ctx, `SELECT column_name, data_type FROM duckdb_columns()
			WHERE database_name = ? AND schema_name = 'main' AND table_name = ? ORDER BY column_index`, db, t.Name)
		if err != nil {
			return nil, fmt.Errorf("snapshot: columns of %s: %w", t.Name, err)
		}
		for cols.Next() {
			var c Column
			if err := cols.Scan(&c.Name, &c.Type); err != nil {
				cols.Close()
				return nil, fmt.Errorf("snapshot: columns of %s: %w", t.Name, err)
			}
			t.Columns = append(t.Columns, c)
		}
		cols.Close()
		if err := cols.Err(); err != nil {
			return nil, fmt.Errorf("snapshot: columns of %s: %w", t.Name, err)
		}
		if _, t.Columns, err = ExportColumns(t.Columns); err != nil {
			return nil, fmt.Errorf("snapshot: table %s: %w", t.Name, err)
		}
	}
	return tables, nil
}

// SameRows reports, in one line, how got (a re-read of a snapshot)
// differs from want (what its writer or index recorded) in tables or row
// counts; nil when they agree.
func SameRows(want, got []Table) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d tables, want %d", len(got), len(want))
	}
	rows := make(map[string]int64, len(got))
	for _, t := range got {
		rows[t.Name] = t.Rows
	}
	for _, t := range want {
		if n, ok := rows[t.Name]; !ok || n != t.Rows {
			return fmt.Errorf("table %s has %d rows, want %d", t.Name, n, t.Rows)
		}
	}
	return nil
}

// DescribeCurrent lists the user tables of the database conn is connected
// to, in conn's current transaction (see describe).
func DescribeCurrent(ctx context.Context, conn *sql.Conn) ([]Table, error) {
	var name string
	if err := conn.QueryRowContext(ctx, "SELECT current_database()").Scan(&name); err != nil {
		return nil, fmt.Errorf("snapshot: current database: %w", err)
	}
	return describe(ctx, conn, name)
}

// Describe opens the snapshot file at path read-only in a separate DuckDB
// instance and returns its user tables with row counts and columns: the
// independent re-read that verifies a snapshot before it is published.
func Describe(ctx context.Context, path string) ([]Table, error) {
	db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true, Threads: 1})
	if err != nil {
		return nil, fmt.Errorf("snapshot: open %s read-only: %w", path, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open %s read-only: %w", path, err)
	}
	defer conn.Close()
	return DescribeCurrent(ctx, conn)
}

// Execer runs a statement: a *sql.DB, *sql.Conn or *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// ExportParquet writes the rows of table (schema main) as db sees them, in
// db's current transaction if it has one, into the Parquet file path
// (zstd) and returns its sha256 and size. cols are the table's columns
// (describe); each is written with ExportColumns' lossless encoding, which
// the Columns describe returns record. where is a SQL predicate over the
// table choosing the rows ("" for all), e.g. "rowid >= 10 AND rowid < 20".
func ExportParquet(ctx context.Context, db Execer, table string, cols []Column, where string, path string) (File, error) {
	list, _, err := ExportColumns(cols)
	if err != nil {
		return File{}, fmt.Errorf("snapshot: export %s to Parquet: %w", table, err)
	}
	q := "SELECT " + list + " FROM main." + duck.Ident(table)
	if where != "" {
		q += " WHERE " + where
	}
	q = "COPY (" + q + ") TO " + duck.Literal(path) + " (FORMAT parquet, COMPRESSION zstd)"
	if _, err := db.ExecContext(ctx, q); err != nil {
		return File{}, fmt.Errorf("snapshot: export %s to Parquet: %w", table, err)
	}
	if err := syncFile(path); err != nil {
		return File{}, err
	}
	sum, n, err := FileSHA256(path)
	if err != nil {
		return File{}, err
	}
	return File{Bytes: n, SHA256: sum}, nil
}

// FileSHA256 returns the sha256 (hex) and size of the file at path.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot: fsync %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("snapshot: fsync dir of %s: %w", path, err)
	}
	return nil
}
