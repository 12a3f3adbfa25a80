package snapshot

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/duck"
)

func openModel(t *testing.T) (*sql.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := duck.Open(context.Background(), filepath.Join(dir, "m.duckdb"), duck.Options{Threads: 1, AllowedDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dir
}

func TestTakeIsConsistentWhileWriting(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	if _, err := db.Exec(`CREATE SCHEMA _teatree; CREATE TABLE _teatree.position(last_seq UBIGINT); INSERT INTO _teatree.position VALUES (7);
		CREATE TABLE t(id BIGINT PRIMARY KEY, v VARCHAR); INSERT INTO t SELECT range, 'v' || range FROM range(1000)`); err != nil {
		t.Fatal(err)
	}
	reader, _ := db.Conn(ctx)
	defer reader.Close()
	writer, _ := db.Conn(ctx)
	defer writer.Close()
	var seq uint64
	info, err := Take(ctx, reader, filepath.Join(dir, "snap.duckdb"), 0, func(ctx context.Context, c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&seq); err != nil {
			return err
		}
		// A commit after the snapshot is pinned must not be in it.
		_, err := writer.ExecContext(ctx, "INSERT INTO t VALUES (5000, 'late'); UPDATE _teatree.position SET last_seq = 8")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 7 {
		t.Errorf("position read in the snapshot = %d, want 7", seq)
	}
	want := []Table{{Name: "t", Rows: 1000, Columns: []Column{{Name: "id", Type: "BIGINT"}, {Name: "v", Type: "VARCHAR"}}}}
	if diff := cmp.Diff(want, info.Tables); diff != "" {
		t.Errorf("tables (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(info.Path + ".wal"); err == nil {
		t.Error("snapshot has a WAL")
	}
	got, err := Describe(ctx, info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("re-read snapshot (-want +got):\n%s", diff)
	}
	sum, n, err := FileSHA256(info.Path)
	if err != nil || sum != info.SHA256 || n != info.Bytes {
		t.Errorf("sha256 %s/%d, Take said %s/%d (%v)", sum, n, info.SHA256, info.Bytes, err)
	}
}

// TestTakePublishesOnlyTheModelAndPosition: a snapshot is handed to
// analysts; teatree's bookkeeping (the request log with every request's
// error text, the outbox) stays in the live file. The model's tables keep
// their constraints (a foreign key to a table copied later by name),
// views and generated columns, and _teatree.position
// (where disaster recovery resumes) is kept.
func TestTakeCopiesTheWholeDatabase(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	if _, err := db.Exec(`CREATE SCHEMA _teatree; CREATE TABLE _teatree.position(last_seq UBIGINT); INSERT INTO _teatree.position VALUES (7);
		CREATE TABLE _teatree.applied(request_id VARCHAR PRIMARY KEY, error VARCHAR);
		INSERT INTO _teatree.applied SELECT 'r' || range, 'secret-error-text-' || range FROM range(5000);
		CREATE TABLE _teatree.outbox(version BIGINT PRIMARY KEY, path VARCHAR); INSERT INTO _teatree.outbox VALUES (1, '/secret/outbox/path');
		CREATE TABLE t(id BIGINT PRIMARY KEY, v VARCHAR); INSERT INTO t SELECT range, 'v' || range FROM range(1000);
		CREATE TABLE g(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2)); INSERT INTO g (a) VALUES (1), (2);
		CREATE TABLE a_child(id INTEGER, t_id BIGINT REFERENCES t(id)); INSERT INTO a_child VALUES (1, 999);
		CREATE VIEW tv AS SELECT count(*) AS n FROM t`); err != nil {
		t.Fatal(err)
	}
	conn, _ := db.Conn(ctx)
	defer conn.Close()
	info, err := Take(ctx, conn, filepath.Join(dir, "snap.duckdb"), 0, func(ctx context.Context, c *sql.Conn) error {
		var seq uint64
		return c.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&seq)
	})
	if err != nil {
		t.Fatal(err)
	}
	sdb, err := duck.Open(ctx, info.Path, duck.Options{ReadOnly: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	var got []string
	rows, err := sdb.Query("SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		got = append(got, n)
	}
	rows.Close()
	if diff := cmp.Diff([]string{"_teatree.applied", "_teatree.outbox", "_teatree.position", "main.a_child", "main.g", "main.t"}, got); diff != "" {
		t.Errorf("tables in the snapshot (-want +got):\n%s", diff)
	}
	var pos, n, b2, pks, applied int
	if err := sdb.QueryRow("SELECT (SELECT last_seq FROM _teatree.position), (SELECT n FROM tv), (SELECT b FROM g WHERE a = 2), (SELECT count(*) FROM duckdb_constraints() WHERE table_name = 't' AND constraint_type = 'PRIMARY KEY'), (SELECT count(*) FROM _teatree.applied)").Scan(&pos, &n, &b2, &pks, &applied); err != nil {
		t.Fatal(err)
	}
	if pos != 7 || n != 1000 || b2 != 4 || pks != 1 || applied != 5000 {
		t.Errorf("copy: position %d, view count %d, generated column %d, primary keys of t %d, applied %d; want 7, 1000, 4, 1, 5000", pos, n, b2, pks, applied)
	}
}

func TestTakeLeavesNoFileOnError(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	conn, _ := db.Conn(ctx)
	defer conn.Close()
	path := filepath.Join(dir, "snap.duckdb")
	_, err := Take(ctx, conn, path, 0, func(ctx context.Context, c *sql.Conn) error {
		var n int
		return c.QueryRowContext(ctx, "SELECT 1 FROM no_such_table").Scan(&n)
	})
	if err == nil {
		t.Fatal("Take succeeded")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a file was left at %s after a failed Take", path)
	}
}

func TestExportParquetReadsBackWithArrow(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	if _, err := db.Exec(`CREATE TABLE t(id BIGINT, v VARCHAR); INSERT INTO t SELECT range, 'v' || range FROM range(2500)`); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t.parquet")
	f, err := ExportParquet(ctx, db, "t", []Column{{Name: "id", Type: "BIGINT"}, {Name: "v", Type: "VARCHAR"}}, "", path)
	if err != nil {
		t.Fatal(err)
	}
	if sum, n, _ := FileSHA256(path); sum != f.SHA256 || n != f.Bytes {
		t.Errorf("ExportParquet reported %s/%d, file is %s/%d", f.SHA256, f.Bytes, sum, n)
	}
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Close()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	if tbl.NumRows() != 2500 {
		t.Fatalf("Parquet holds %d rows, want 2500", tbl.NumRows())
	}
	// Row for row against the model.
	tr := array.NewTableReader(tbl, 1000)
	defer tr.Release()
	row := 0
	for tr.Next() {
		rec := tr.Record()
		ids := rec.Column(0).(*array.Int64)
		vs := rec.Column(1).(*array.String)
		for i := 0; i < int(rec.NumRows()); i++ {
			var id int64
			var v string
			if err := db.QueryRow("SELECT id, v FROM t WHERE id = ?", ids.Value(i)).Scan(&id, &v); err != nil || v != vs.Value(i) {
				t.Fatalf("row %d: Parquet (%d, %q), model (%d, %q), %v", row, ids.Value(i), vs.Value(i), id, v, err)
			}
			row++
		}
	}
}

func TestDiff(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	conn, _ := db.Conn(ctx)
	defer conn.Close()
	noop := func(ctx context.Context, c *sql.Conn) error {
		var n int
		return c.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec("CREATE TABLE keep(id INT); INSERT INTO keep VALUES (1),(2); CREATE TABLE gone(id INT); CREATE TABLE t(id INT, v VARCHAR); INSERT INTO t VALUES (1,'a'),(2,'b'),(3,'c')")
	a, err := Take(ctx, conn, filepath.Join(dir, "a.duckdb"), 0, noop)
	if err != nil {
		t.Fatal(err)
	}
	exec("DROP TABLE gone; CREATE TABLE fresh(x INT); INSERT INTO fresh VALUES (9); DELETE FROM t WHERE id = 1; UPDATE t SET v = 'B' WHERE id = 2; INSERT INTO t VALUES (4,'d'); ALTER TABLE t ADD COLUMN w INT")
	b, err := Take(ctx, conn, filepath.Join(dir, "b.duckdb"), 0, noop)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Diff(ctx, a.Path, b.Path)
	if err != nil {
		t.Fatal(err)
	}
	want := []TableDiff{
		{Table: "fresh", Change: "added", RowsAdded: 1, ColumnsAdded: []Column{{Name: "x", Type: "INTEGER"}}},
		{Table: "gone", Change: "removed", ColumnsRemoved: []Column{{Name: "id", Type: "INTEGER"}}},
		{Table: "keep", Change: "unchanged"},
		{Table: "t", Change: "changed", RowsAdded: 2, RowsRemoved: 2, ColumnsAdded: []Column{{Name: "w", Type: "INTEGER"}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
}

// TestTakeWhileAnotherConnectionReadsTheCatalog takes snapshots while
// another connection runs transactions that read the catalog (as the
// functions do) and insert. Such a transaction keeps a detached snapshot
// open until it ends; Take must neither fail on that nor, by reusing a
// database name, make DuckDB invalidate the instance.
func TestTakeWhileAnotherConnectionReadsTheCatalog(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	if _, err := db.Exec("CREATE TABLE t(id BIGINT)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		conn, err := db.Conn(ctx)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				done <- err
				return
			}
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM duckdb_tables() t JOIN duckdb_columns() c ON c.table_oid = t.table_oid").Scan(&n); err != nil {
				tx.Rollback()
				done <- err
				return
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?)", i); err != nil {
				tx.Rollback()
				done <- err
				return
			}
			if err := tx.Commit(); err != nil {
				done <- err
				return
			}
		}
	}()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for v := range 40 {
		var rows int64
		info, err := Take(ctx, conn, filepath.Join(dir, fmt.Sprintf("v%d.duckdb", v)), 0, func(ctx context.Context, c *sql.Conn) error {
			return c.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&rows)
		})
		if err != nil {
			t.Fatalf("snapshot %d: %v", v, err)
		}
		got, err := Describe(ctx, info.Path)
		if err != nil {
			t.Fatalf("snapshot %d: %v", v, err)
		}
		if len(got) != 1 || got[0].Rows != rows {
			t.Fatalf("snapshot %d holds %+v, want table t with the %d rows seen when it was taken", v, got, rows)
		}
		if sum, _, err := FileSHA256(info.Path); err != nil || sum != info.SHA256 {
			t.Fatalf("snapshot %d changed after Take: sha256 %s, Take said %s (%v)", v, sum, info.SHA256, err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("the other connection: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "*.tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

// TestTakeWritesStorageVersion checks that a snapshot is written in
// StorageVersion even when the engine would write new files in a newer one:
// the file header says version 64 (DuckDB 0.10 and later open it) and DuckDB
// reports the storage version of serialization v0.10.2 when it opens it.
func TestTakeWritesStorageVersion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := duck.Open(ctx, filepath.Join(dir, "m.duckdb"), duck.Options{Threads: 1, ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`SET GLOBAL storage_compatibility_version = 'latest';
		CREATE TABLE t(id BIGINT, ts TIMESTAMP, v VARCHAR); INSERT INTO t SELECT range, TIMESTAMP '2026-01-01' + to_seconds(range), 'v' || range FROM range(5000)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	info, err := Take(ctx, conn, filepath.Join(dir, "snap.duckdb"), 0, func(ctx context.Context, c *sql.Conn) error {
		_, err := c.ExecContext(ctx, "SELECT count(*) FROM t")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := headerVersion(t, info.Path); v != 64 {
		t.Errorf("snapshot file header version %d, want 64 (storage %s)", v, StorageVersion)
	}
	snap, err := duck.Open(ctx, info.Path, duck.Options{ReadOnly: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var tag string
	if err := snap.QueryRow("SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database()").Scan(&tag); err != nil {
		t.Fatal(err)
	}
	// DuckDB names every serialization older than v1.2.0 "v1.0.0+".
	if tag != "v1.0.0+" {
		t.Errorf("DuckDB reports storage version %q for the snapshot, want v1.0.0+ (%s)", tag, StorageVersion)
	}
	// The engine setting did apply to other new files: the test would not
	// notice a Take that followed it.
	other := filepath.Join(dir, "other.duckdb")
	if _, err := db.Exec("ATTACH " + duck.Literal(other) + " AS other; CREATE TABLE other.x AS SELECT 1 AS a; DETACH other"); err != nil {
		t.Fatal(err)
	}
	if v := headerVersion(t, other); v <= 64 {
		t.Errorf("a file attached with storage_compatibility_version latest has header version %d, want > 64", v)
	}
}

// headerVersion reads the storage version number of the DuckDB file at
// path from its main header: an 8-byte checksum, the magic "DUCK", then the
// version as a little-endian uint64 (src/storage/single_file_block_manager.cpp).
func headerVersion(t *testing.T, path string) uint64 {
	t.Helper()
	b := make([]byte, 20)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	if string(b[8:12]) != "DUCK" {
		t.Fatalf("%s: no DuckDB magic bytes in the header", path)
	}
	return binary.LittleEndian.Uint64(b[12:20])
}
