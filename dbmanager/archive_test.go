package dbmanager_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// manifest reads the manifest of version v of model m.
func manifest(t *testing.T, s *stacktest.Stack, m string, v int64) snapshot.Manifest {
	t.Helper()
	rc, err := s.Store.Get(context.Background(), snapshot.ManifestKey(m, v))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var mf snapshot.Manifest
	if err := json.NewDecoder(rc).Decode(&mf); err != nil {
		t.Fatal(err)
	}
	return mf
}

// checkArchive checks version v's archive against its snapshot (every file
// listed exists, read_parquet over a table's files equals the table) and
// that Postgres lists the manifest's files; it returns the manifest.
func checkArchive(t *testing.T, s *stacktest.Stack, m string, v int64) snapshot.Manifest {
	t.Helper()
	ctx := context.Background()
	pv, err := s.Ctl.GetVersion(ctx, m, v)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "v.duckdb")
	if err := versionFile(ctx, s, pv, path); err != nil {
		t.Fatal(err)
	}
	mf := manifest(t, s, m, v)
	if err := snapshot.CheckArchive(ctx, s.Store, mf.Tables, path, dir); err != nil {
		t.Fatalf("version %d: %v", v, err)
	}
	if len(pv.Tables) != len(mf.Tables) {
		t.Fatalf("version %d: Postgres has %d tables, the manifest %d", v, len(pv.Tables), len(mf.Tables))
	}
	for i, tb := range mf.Tables {
		ct := pv.Tables[i]
		if ct.Name != tb.Name || len(ct.Files) != len(tb.Files) || ct.SHA256 != snapshot.FilesDigest(tb.Files) {
			t.Fatalf("version %d table %s: Postgres lists %d files (digest %s), the manifest %d", v, tb.Name, len(ct.Files), ct.SHA256, len(tb.Files))
		}
		for j, f := range tb.Files {
			if ct.Files[j].Key != f.Key || ct.Files[j].Rows != f.Rows {
				t.Fatalf("version %d table %s file %d: Postgres %+v, manifest %+v", v, tb.Name, j, ct.Files[j], f)
			}
		}
	}
	return mf
}

func keys(tb snapshot.Table) map[string]bool {
	out := map[string]bool{}
	for _, f := range tb.Files {
		out[f.Key] = true
	}
	return out
}

func table(t *testing.T, mf snapshot.Manifest, name string) snapshot.Table {
	t.Helper()
	for _, tb := range mf.Tables {
		if tb.Name == name {
			return tb
		}
	}
	t.Fatalf("version %d has no table %s", mf.Version, name)
	return snapshot.Table{}
}

// submitVersion submits r, waits for it to be applied and returns the
// version it is part of.
func submitVersion(t *testing.T, s *stacktest.Stack, r model.Request) int64 {
	t.Helper()
	n := s.SubmitWait(t, r, wait)
	if n.Status != model.StatusApplied || n.Version == 0 {
		t.Fatalf("%s (%s): %s %q version %d", r.ID, r.Function, n.Status, n.Error, n.Version)
	}
	return n.Version
}

// TestArchiveWritesWhatChanged: a table (with columns Parquet holds
// encoded: HUGEINT, INTERVAL, and columns named like the cut's own
// aliases) written whole is split into data
// files; appending a row adds one file of that row and keeps the others;
// an update rewrites only the file holding the rows it changed; a delete
// and a refresh leave an archive equal to the snapshot.
func TestArchiveWritesWhatChanged(t *testing.T) {
	defer dbmanager.SetArchiveLimits(1000, 1024, 3)()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "arch", AllowSQL: true}).ID
	run(t, s, m, nil)
	sql := func(id, q string) model.Request {
		return stacktest.Request(m, id, "sql", map[string]any{"sql": q})
	}
	v := submitVersion(t, s, sql("fill", "CREATE TABLE big AS SELECT range AS id, md5(range::VARCHAR) AS h, range::HUGEINT * 100000000000000000000 AS huge, to_microseconds(range) AS iv, range % 3 AS b, range % 5 AS bucket FROM range(4500)"))
	big := table(t, checkArchive(t, s, m, v), "big")
	if len(big.Files) != 5 {
		t.Fatalf("4500 rows in %d files, want 5 of at most 1000 rows", len(big.Files))
	}
	v = submitVersion(t, s, stacktest.Request(m, "one", "append", map[string]any{"table": "big", "rows": []map[string]any{{"id": 9999, "h": "new"}}}))
	after := table(t, checkArchive(t, s, m, v), "big")
	if len(after.Files) != 6 || after.Files[5].Rows != 1 {
		t.Fatalf("after a one-row append: %d files, last of %d rows; want the 5 files and one of 1 row", len(after.Files), after.Files[len(after.Files)-1].Rows)
	}
	for k := range keys(big) {
		if !keys(after)[k] {
			t.Fatalf("the one-row append rewrote %s", k)
		}
	}
	// Each update rewrites only the file holding its rows (file 0, then
	// file 2): the bytes written are that file's.
	update := func(id string, lo, hi int) snapshot.Manifest {
		return checkArchive(t, s, m, submitVersion(t, s, stacktest.Request(m, id, "update", map[string]any{"table": "big", "set": map[string]any{"h": id},
			"where": []map[string]any{{"column": "id", "op": ">=", "value": lo}, {"column": "id", "op": "<", "value": hi}}})))
	}
	first := update("upd-first", 0, 10)
	if f0 := table(t, first, "big").Files[0]; first.ParquetWritten != f0.Bytes {
		t.Fatalf("an update of 10 rows in file 0 wrote %d bytes, want file 0's %d", first.ParquetWritten, f0.Bytes)
	}
	mf := update("upd", 2100, 2200)
	upd := table(t, mf, "big")
	var rewritten int
	var newBytes int64
	for _, f := range upd.Files {
		if !keys(after)[f.Key] {
			rewritten++
			newBytes += f.Bytes
		}
	}
	if len(upd.Files) != 6 || rewritten != 2 || mf.ParquetWritten != newBytes-upd.Files[0].Bytes {
		t.Fatalf("an update of 100 rows in file 2: %d files, %d new since the append (want 6 and 2: files 0 and 2), %d bytes written (want %d, file 2's)",
			len(upd.Files), rewritten, mf.ParquetWritten, newBytes-upd.Files[0].Bytes)
	}
	v = mf.Version
	// More small files (under 1000/16 rows) than maxFiles (3): the small
	// adjacent ones are merged, the others kept.
	for i := range 3 {
		v = submitVersion(t, s, stacktest.Request(m, fmt.Sprint("small", i), "append", map[string]any{"table": "big", "rows": []map[string]any{{"id": 10000 + i, "h": "small"}}}))
	}
	merged := table(t, checkArchive(t, s, m, v), "big")
	if len(merged.Files) != 6 || merged.Files[5].Rows != 4 {
		t.Fatalf("after 4 one-row files: %d files, the last of %d rows; want 6, the 4 small ones merged", len(merged.Files), merged.Files[len(merged.Files)-1].Rows)
	}
	for i := range 5 {
		if merged.Files[i].Key != upd.Files[i].Key {
			t.Fatalf("the merge rewrote file %d, not a small one", i)
		}
	}
	v = submitVersion(t, s, sql("del", "DELETE FROM big WHERE id < 1500"))
	del := table(t, checkArchive(t, s, m, v), "big")
	// Free rowids at the start: the append counts every range, finds them
	// as they were and keeps every file.
	v = submitVersion(t, s, stacktest.Request(m, "after-del", "append", map[string]any{"table": "big", "rows": []map[string]any{{"id": 20000, "h": "after"}}}))
	afterDel := table(t, checkArchive(t, s, m, v), "big")
	if len(afterDel.Files) != len(del.Files)+1 {
		t.Fatalf("a one-row append after a delete: %d files, want the delete's %d and one", len(afterDel.Files), len(del.Files))
	}
	for k := range keys(del) {
		if !keys(afterDel)[k] {
			t.Fatalf("the one-row append after a delete rewrote %s", k)
		}
	}
	v = submitVersion(t, s, stacktest.Request(m, "ref", "refresh", map[string]any{"table": "d", "query": "SELECT id % 7 AS k, count(*) AS n FROM big GROUP BY k"}))
	checkArchive(t, s, m, v)
}

// TestArchiveRandomSequence: after every version of a random sequence of
// functions over several tables (appends, upserts, updates, deletes,
// refreshes, drops, sql, with compactions of the live file and merges of
// small data files), read_parquet over each table's files equals the
// snapshot's table and every listed file exists.
func TestArchiveRandomSequence(t *testing.T) {
	defer dbmanager.SetArchiveLimits(700, 2048, 5)()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "rnd", AllowSQL: true}).ID
	run(t, s, m, func(mgr *dbmanager.Manager) { mgr.SetCompaction(0.3, 1) })
	next := 0
	id := func() string { next++; return fmt.Sprint("r", next) }
	req := func(fn string, args map[string]any) model.Request { return stacktest.Request(m, id(), fn, args) }
	submitVersion(t, s, req("create_table", map[string]any{"table": "kv", "columns": []map[string]string{{"name": "k", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}, {"name": "x", "type": "DOUBLE"}}, "primary_key": []string{"k"}}))
	submitVersion(t, s, req("create_table", map[string]any{"table": "log", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "s", "type": "VARCHAR"}, {"name": "tags", "type": "VARCHAR[]"}}}))
	rowsOf := func(n, from int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			k := from + i
			out[i] = map[string]any{"id": k, "s": fmt.Sprintf("s%d-%d", k, rng.IntN(1000)), "tags": []string{"a", fmt.Sprint(k % 5)}}
		}
		return out
	}
	logID, kvID := 0, 0
	steps := 30
	if testing.Short() {
		steps = 12
	}
	for step := 0; step < steps; step++ {
		var r model.Request
		switch op := rng.IntN(10); op {
		case 0, 1, 2: // append to log
			n := 1 + rng.IntN(1500)
			r = req("append", map[string]any{"table": "log", "rows": rowsOf(n, logID)})
			logID += n
		case 3: // upsert into kv
			n := 1 + rng.IntN(800)
			rows := make([]map[string]any, n)
			for i := range rows {
				k := rng.IntN(kvID + n)
				rows[i] = map[string]any{"k": k, "v": fmt.Sprint("v", step), "x": rng.Float64()}
			}
			kvID += n
			r = req("upsert", map[string]any{"table": "kv", "rows": dedupe(rows)})
		case 4: // update a range of log
			lo := rng.IntN(logID + 1)
			r = req("update", map[string]any{"table": "log", "set": map[string]any{"s": fmt.Sprint("u", step)},
				"where": []map[string]any{{"column": "id", "op": ">=", "value": lo}, {"column": "id", "op": "<", "value": lo + 1 + rng.IntN(300)}}})
		case 5: // delete a range of log
			lo := rng.IntN(logID + 1)
			r = req("delete", map[string]any{"table": "log", "where": []map[string]any{{"column": "id", "op": ">=", "value": lo}, {"column": "id", "op": "<", "value": lo + rng.IntN(2000)}}})
		case 6:
			r = req("refresh", map[string]any{"table": "agg", "query": "SELECT id % 13 AS b, count(*) AS n, max(s) AS s FROM log GROUP BY b"})
		case 7:
			r = req("sql", map[string]any{"sql": fmt.Sprintf("DELETE FROM kv WHERE k %% 7 = %d", rng.IntN(7))})
		case 8: // drop and re-create log
			submitVersion(t, s, req("drop_table", map[string]any{"table": "log"}))
			r = req("create_table", map[string]any{"table": "log", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "s", "type": "VARCHAR"}, {"name": "tags", "type": "VARCHAR[]"}}})
			logID = 0
		case 9: // many small appends: data files to merge
			for range 3 {
				n := 1 + rng.IntN(5)
				checkArchive(t, s, m, submitVersion(t, s, req("append", map[string]any{"table": "log", "rows": rowsOf(n, logID)})))
				logID += n
			}
			continue
		}
		v := submitVersion(t, s, r)
		checkArchive(t, s, m, v)
	}
}

// dedupe keeps the last row of each key k (an upsert may not give a key
// twice).
func dedupe(rows []map[string]any) []map[string]any {
	seen := map[any]int{}
	var out []map[string]any
	for _, r := range rows {
		if i, ok := seen[r["k"]]; ok {
			out[i] = r
			continue
		}
		seen[r["k"]] = len(out)
		out = append(out, r)
	}
	return out
}
