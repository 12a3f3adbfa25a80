package dbmanager

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/profile"
	"github.com/teatree/teatree/snapshot"
)

// TestArchiveTwoReads: the data files of a table written whole over two
// read transactions pinned to the same state (as freeze pins them) each
// hold their range's rows of that state, whichever transaction wrote or
// counted them, with their count, hash sum and profile; a commit after
// the pin is in none of them. A failing task fails the table.
func TestArchiveTwoReads(t *testing.T) {
	ctx := context.Background()
	defer func(n int64) { fileRows = n }(fileRows)
	fileRows = 100
	dir := t.TempDir()
	db, err := duck.Open(ctx, filepath.Join(dir, "m.duckdb"), duck.Options{Threads: 2, AllowedDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t AS SELECT i AS id, i % 7 AS k, 'v' || i AS s FROM range(1000) r(i)`); err != nil {
		t.Fatal(err)
	}
	var reads []*sql.Conn
	for range 2 {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var n int64
		if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		reads = append(reads, c)
	}
	// After the pin: in no data file.
	if _, err := db.ExecContext(ctx, `UPDATE t SET s = 'later' WHERE id % 3 = 0`); err != nil {
		t.Fatal(err)
	}
	tables, err := snapshot.DescribeCurrent(ctx, reads[0])
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "v")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	a := archiver{conn: reads[0], more: reads[1:], dir: out, namespace: "m", profiles: true, log: slog.Default()}
	ct := cutTable{Table: tables[0]}
	if err := a.table(ctx, &ct, cutTable{}, false, 0); err != nil {
		t.Fatal(err)
	}
	if len(ct.Data) != 10 || ct.NextRowID != 1000 {
		t.Fatalf("%d data files up to rowid %d, want 10 up to 1000", len(ct.Data), ct.NextRowID)
	}
	for i, f := range ct.Data {
		lo := int64(i) * 100
		var rows, later, minID int64
		var hash string
		if err := reads[0].QueryRowContext(ctx, "SELECT count(*), count(*) FILTER (WHERE s = 'later'), min(id) FROM read_parquet("+duck.Literal(f.Local)+")").Scan(&rows, &later, &minID); err != nil {
			t.Fatal(err)
		}
		if err := reads[0].QueryRowContext(ctx, "SELECT sum("+rowHash(ct.Columns)+")::VARCHAR FROM t WHERE rowid >= ? AND rowid < ?", lo, lo+100).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		sum, n, err := snapshot.FileSHA256(f.Local)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.FirstRowID != lo || rows != 100 || f.Rows != 100 || minID != lo:
			t.Fatalf("file %d: first rowid %d, %d rows (counted %d) from id %d; want %d, 100 rows", i, f.FirstRowID, rows, f.Rows, minID, lo)
		case later > 0:
			t.Fatalf("file %d holds %d rows of a commit after the pin", i, later)
		case f.RowHash != hash:
			t.Fatalf("file %d: row hash %s, the pinned rows' %s", i, f.RowHash, hash)
		case f.SHA256 != sum || f.Bytes != n || f.Key != snapshot.ParquetKey("m", "t", sum):
			t.Fatalf("file %d: %+v, the file has sha256 %s and %d bytes", i, f.DataFile, sum, n)
		}
		data, err := os.ReadFile(f.Profile)
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if p.Rows != 100 || p.Columns[0].Min == nil || p.Columns[0].Min.Text != strconv.FormatInt(lo, 10) {
			t.Fatalf("file %d: profile of %d rows, id from %v", i, p.Rows, p.Columns[0].Min)
		}
	}

	// A COPY that cannot write its file fails the table, after every task.
	a = archiver{conn: reads[0], more: reads[1:], dir: filepath.Join(dir, "missing"), namespace: "m", log: slog.Default()}
	ct = cutTable{Table: tables[0]}
	if err := a.table(ctx, &ct, cutTable{}, false, 0); err == nil {
		t.Fatal("archived into a missing directory")
	}
	if a.tasks != nil || len(a.pending) > 0 || len(a.pool) != 2 {
		t.Fatalf("after a failed table: tasks %v, %d pending, %d of 2 reads free", a.tasks != nil, len(a.pending), len(a.pool))
	}
}
