package dbmanager_test

import (
	"compress/gzip"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// legacyRequests are the requests testdata/legacy-duckdb-1.4.5.duckdb.gz
// applied (stream sequences 1-3): the live file of model "legacy" written by
// the db-manager of the DuckDB 1.4.5 release, closed cleanly (no WAL).
func legacyRequests(m string) []model.Request {
	return []model.Request{
		stacktest.Request(m, "create", "create_table", map[string]any{
			"table": "events", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "ts", "type": "TIMESTAMP"}, {"name": "amount", "type": "DOUBLE"}}, "primary_key": []string{"id"}}),
		stacktest.Request(m, "a1", "append", map[string]any{"table": "events", "rows": []map[string]any{
			{"id": 1, "ts": "2026-01-05 10:00:00", "amount": 1.5},
			{"id": 2, "ts": "2026-01-20 11:00:00", "amount": 2.5},
			{"id": 3, "ts": "2026-02-03 12:00:00", "amount": 4},
		}}),
		monthlyRefresh(m, "r1"),
	}
}

func monthlyRefresh(m, id string) model.Request {
	return stacktest.Request(m, id, "refresh", map[string]any{"table": "monthly",
		"query": "SELECT date_trunc('month', ts) AS month, count(*) AS n, sum(amount) AS amount FROM events GROUP BY ALL ORDER BY month"})
}

// TestOpensModelWrittenByDuckDB145 upgrades a model in place: the live file
// written by the previous release (DuckDB 1.4.5) is opened by this one,
// which applies new requests, cuts versions from it and refreshes its
// derived table. date_trunc('month', TIMESTAMP) is DATE in DuckDB 1.4 and
// TIMESTAMP in 1.5 (duckdb/duckdb#19629): the derived table keeps its DATE
// column until its next refresh, which replaces it with a TIMESTAMP column.
func TestOpensModelWrittenByDuckDB145(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "legacy"}).ID
	live := filepath.Join(s.DataDir, m, m+".duckdb")
	unzip(t, filepath.Join("testdata", "legacy-duckdb-1.4.5.duckdb.gz"), live)
	// Postgres records version 1 as the old release published it (from the
	// file's outbox), so that numbering goes on at 2.
	ctx := context.Background()
	v1 := controldb.Version{Model: m, Epoch: 1}
	old, err := duck.Open(ctx, live, duck.Options{ReadOnly: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = old.QueryRow("SELECT version, first_seq, last_seq, request_count, sha256, bytes, created FROM _teatree.outbox WHERE published IS NOT NULL").
		Scan(&v1.Version, &v1.FirstSeq, &v1.LastSeq, &v1.RequestCount, &v1.SHA256, &v1.Bytes, &v1.Created)
	old.Close()
	if err != nil {
		t.Fatal(err)
	}
	v1.SnapshotURI, v1.ManifestURI = snapshot.SnapshotKey(m, v1.Version), snapshot.ManifestKey(m, v1.Version)
	if n := resumeLegacy(t, s, v1); n.Status != model.StatusApplied {
		t.Fatalf("append after the upgrade: %s %s", n.Status, n.Error)
	}
	// Four rows: a1's three once (the old requests are below the file's
	// position and are not applied again) and a2's.
	waitVersionWith(t, s, m, "SELECT count(*) = 4 FROM events")
	db, _ := latest(t, s, m)
	if got := monthType(t, db); got != "DATE" {
		t.Errorf("monthly.month before its next refresh is %s, want DATE (kept from DuckDB 1.4.5)", got)
	}

	s.Submit(t, monthlyRefresh(m, "r2"))
	if n := s.Outcomes(t, m, wait, "r2")["r2"]; n.Status != model.StatusApplied {
		t.Fatalf("refresh after the upgrade: %s %s", n.Status, n.Error)
	}
	waitVersionWith(t, s, m, "SELECT count(*) = 3 FROM monthly")
	db, v := latest(t, s, m)
	if v.Version <= v1.Version {
		t.Errorf("latest version %d, want after the old release's version %d", v.Version, v1.Version)
	}
	if got := monthType(t, db); got != "TIMESTAMP" {
		t.Errorf("monthly.month after a refresh by DuckDB 1.5 is %s, want TIMESTAMP", got)
	}
	rows, err := db.Query("SELECT strftime(month, '%Y-%m-%d %H:%M:%S'), n, amount FROM monthly ORDER BY month")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type month struct {
		Month  string
		N      int64
		Amount float64
	}
	var got []month
	for rows.Next() {
		var r month
		if err := rows.Scan(&r.Month, &r.N, &r.Amount); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	want := []month{{"2026-01-01 00:00:00", 2, 4}, {"2026-02-01 00:00:00", 1, 4}, {"2026-03-01 00:00:00", 1, 8}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("monthly in version %d (-want +got):\n%s", v.Version, diff)
	}
	for _, tb := range v.Tables {
		if tb.Name == "monthly" && tb.Rows != 3 {
			t.Errorf("Postgres records %d rows for monthly in version %d, want 3", tb.Rows, v.Version)
		}
	}
}

// TestRestoresSnapshotWrittenByDuckDB145 is disaster recovery across the
// upgrade: the live file is lost and the latest version is a snapshot the
// DuckDB 1.4.5 release published. This release restores it, goes on from
// its position and publishes the next version.
func TestRestoresSnapshotWrittenByDuckDB145(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "legacy"}).ID
	path := filepath.Join(t.TempDir(), "v1.duckdb")
	unzip(t, filepath.Join("testdata", "legacy-duckdb-1.4.5-v1-snapshot.duckdb.gz"), path)
	sum, size, err := snapshot.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	v1 := controldb.Version{Model: m, Version: 1, SnapshotURI: snapshot.SnapshotKey(m, 1), ManifestURI: snapshot.ManifestKey(m, 1),
		SHA256: sum, Bytes: size, FirstSeq: 1, LastSeq: 3, RequestCount: 3, Epoch: 1, Created: time.Now()}
	if err := objstore.PutFile(ctx, s.Store, v1.SnapshotURI, path); err != nil {
		t.Fatal(err)
	}
	n := resumeLegacy(t, s, v1)
	if n.Status != model.StatusApplied || n.Version != 2 {
		t.Fatalf("append after restoring a DuckDB 1.4.5 snapshot: %s in version %d %s, want applied in version 2", n.Status, n.Version, n.Error)
	}
	waitVersionWith(t, s, m, "SELECT count(*) = 4 FROM events")
	db, _ := latest(t, s, m)
	if got := monthType(t, db); got != "DATE" {
		t.Errorf("monthly.month after the restore is %s, want DATE (kept from DuckDB 1.4.5)", got)
	}
}

// resumeLegacy records v1, the version the DuckDB 1.4.5 release published,
// in Postgres, submits the requests that release applied again (the request
// log still holds them: they are below the file's position, 3, and are
// skipped, not applied again), runs this release's db-manager and appends
// one row as a2, whose notification it returns.
func resumeLegacy(t *testing.T, s *stacktest.Stack, v1 controldb.Version) model.Notification {
	t.Helper()
	ctx, m := context.Background(), v1.Model
	if err := s.Ctl.ClaimEpoch(ctx, m, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ctl.PublishVersion(ctx, v1, nil); err != nil {
		t.Fatal(err)
	}
	s.Submit(t, legacyRequests(m)...)
	run(t, s, m, nil)
	s.Submit(t, stacktest.Request(m, "a2", "append", map[string]any{"table": "events", "rows": []map[string]any{
		{"id": 4, "ts": "2026-03-09 08:00:00", "amount": 8},
	}}))
	return s.Outcomes(t, m, wait, "a2")["a2"]
}

// monthType is the type of monthly.month in db.
func monthType(t *testing.T, db *sql.DB) string {
	t.Helper()
	var typ string
	if err := db.QueryRow("SELECT data_type FROM duckdb_columns() WHERE table_name = 'monthly' AND column_name = 'month'").Scan(&typ); err != nil {
		t.Fatal(err)
	}
	return typ
}

// waitVersionWith waits until the latest published version of m satisfies
// the boolean query cond.
func waitVersionWith(t *testing.T, s *stacktest.Stack, m, cond string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		db, v := latest(t, s, m)
		var ok bool
		err := db.QueryRow(cond).Scan(&ok)
		db.Close()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no version satisfies %q; latest is %d (%v)", cond, v.Version, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unzip writes the gzip-compressed file src to dst.
func unzip(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteUpgradeFixture writes the live file of model "legacy" after
// legacyRequests, as this release's db-manager leaves it, to the file named
// by TEATREE_UPGRADE_FIXTURE, and its published version 1 to that name +
// ".v1-snapshot" (gzip them into testdata). Run on the DuckDB 1.4.5 release,
// it made testdata/legacy-duckdb-1.4.5*.duckdb.gz; run it before the next
// engine upgrade to make that upgrade's fixtures.
func TestWriteUpgradeFixture(t *testing.T) {
	out := os.Getenv("TEATREE_UPGRADE_FIXTURE")
	if out == "" {
		t.Skip("TEATREE_UPGRADE_FIXTURE is not set")
	}
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "legacy"}).ID
	s.Submit(t, legacyRequests(m)...)
	h := run(t, s, m, nil)
	for id, n := range s.Outcomes(t, m, wait, "create", "a1", "r1") {
		if n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", id, n.Status, n.Error)
		}
	}
	waitVersionWith(t, s, m, "SELECT count(*) = 2 FROM monthly")
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(s.DataDir, m, m+".duckdb")
	if _, err := os.Stat(live + ".wal"); err == nil {
		t.Fatal("the live file has a WAL after the db-manager stopped")
	}
	b, err := os.ReadFile(live)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := objectFile(context.Background(), s, snapshot.SnapshotKey(m, 1), out+".v1-snapshot"); err != nil {
		t.Fatal(err)
	}
}
