package dbmanager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// blockKeys lists the block objects of model m.
func blockKeys(t *testing.T, s *stacktest.Stack, m string) map[string]bool {
	t.Helper()
	objs, err := s.Store.List(context.Background(), "models/"+m+"/blocks/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, o := range objs {
		out[o.Key] = true
	}
	return out
}

// liveBlockSize reads the block size from the header of model m's live file.
func liveBlockSize(t *testing.T, s *stacktest.Stack, m string) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join(s.DataDir, m, m+".duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, blocks.HeaderSize)
	if _, err := io.ReadFull(f, hdr); err != nil {
		t.Fatal(err)
	}
	h, err := blocks.ReadHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	return h.BlockSize
}

// fill makes table wide of n rows (raw SQL: a refresh may not read range()).
func fill(m, id string, n int) model.Request {
	return stacktest.Request(m, id, "sql", map[string]any{"sql": fmt.Sprintf("CREATE OR REPLACE TABLE wide AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(%d)", n)})
}

// TestVersionUploadsOnlyChangedBlocks: after a large version, a one-row
// append uploads a few blocks, not the model; the version's snapshot,
// rebuilt from the block store (every block and the root verified), opens
// read-only with the new row.
func TestVersionUploadsOnlyChangedBlocks(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "big", AllowSQL: true}).ID
	s.Submit(t, createTable(m, "create"), fill(m, "fill", 300000))
	h := run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create", "fill")
	if bs := liveBlockSize(t, s, m); bs != dbmanager.DefaultBlockSize {
		t.Errorf("a new live file has %d-byte blocks, want %d", bs, dbmanager.DefaultBlockSize)
	}
	v1, err := s.Ctl.GetVersion(context.Background(), m, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := blockKeys(t, s, m)
	if v1.SnapshotFormat != controldb.FormatBlocks || int64(len(before)) < v1.Bytes/dbmanager.DefaultBlockSize/2 {
		t.Fatalf("first version: format %q, %d block objects for %d bytes; want a block snapshot uploaded whole", v1.SnapshotFormat, len(before), v1.Bytes)
	}
	s.Submit(t, appendRow(m, "one", 1))
	s.Outcomes(t, m, wait, "one")
	v2, err := s.Ctl.GetVersion(context.Background(), m, 0)
	if err != nil {
		t.Fatal(err)
	}
	after := blockKeys(t, s, m)
	added := 0
	for k := range after {
		if !before[k] {
			added++
		}
	}
	// The appended row changes the table's last row group, the catalog
	// metadata and the bookkeeping tables (a block or so each); the header
	// is rewritten at every checkpoint. The 300,000-row table is not.
	if v2.Bytes < 20*dbmanager.DefaultBlockSize || added == 0 || added > 10 || v2.Uploaded > int64(added)*dbmanager.DefaultBlockSize {
		t.Errorf("one-row append to a %d-byte file: %d new block objects, %d bytes uploaded; want at most 10 blocks", v2.Bytes, added, v2.Uploaded)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	db, _ := latest(t, s, m)
	var n int
	if err := db.QueryRow("SELECT count(*) FROM t WHERE n = 1").Scan(&n); err != nil || n != 1 {
		t.Errorf("the appended row in version 2: %d, %v", n, err)
	}
}

// TestCompactionCutsACompactVersion: once most of the live file is free
// (a large table replaced by a small one), the next cut compacts the file
// into a copy, marks the version, and the versions after it are
// incremental again; nothing is lost.
func TestCompactionCutsACompactVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "cmp", AllowSQL: true}).ID
	s.Submit(t, createTable(m, "create"), fill(m, "fill", 300000))
	// Made with DuckDB's 256 KiB blocks (as by an older release), the
	// model moves to the configured 64 KiB at its compaction.
	h := run(t, s, m, func(mgr *dbmanager.Manager) { mgr.SetBlockSize(blocks.MaxBlockSize); mgr.SetCompaction(-1, 0) })
	s.Outcomes(t, m, wait, "create", "fill")
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if bs := liveBlockSize(t, s, m); bs != blocks.MaxBlockSize {
		t.Fatalf("live file made with %d-byte blocks, want %d", bs, blocks.MaxBlockSize)
	}
	h = run(t, s, m, func(mgr *dbmanager.Manager) { mgr.SetCompaction(0.4, 4<<20) })
	s.Submit(t, fill(m, "shrink", 1))
	s.Outcomes(t, m, wait, "shrink")
	for i := range 3 {
		s.Submit(t, appendRow(m, fmt.Sprint("a-", i), i))
		s.Outcomes(t, m, wait, fmt.Sprint("a-", i))
	}
	vs, err := s.Ctl.ListVersions(context.Background(), m, true)
	if err != nil {
		t.Fatal(err)
	}
	var compactions []int
	for i, v := range vs {
		if v.Compaction {
			compactions = append(compactions, i)
		}
	}
	last := vs[len(vs)-1]
	if len(compactions) != 1 || last.Compaction || last.Uploaded >= last.Bytes {
		t.Fatalf("versions: compactions at %v, last compaction=%v uploading %d of %d bytes; want one compaction and incremental versions after it", compactions, last.Compaction, last.Uploaded, last.Bytes)
	}
	if c := vs[compactions[0]]; c.Bytes*2 > vs[compactions[0]-1].Bytes {
		t.Errorf("the compaction made version %d of %d bytes, from %d", c.Version, c.Bytes, vs[compactions[0]-1].Bytes)
	}
	if bs := liveBlockSize(t, s, m); bs != dbmanager.DefaultBlockSize {
		t.Errorf("after compaction the live file has %d-byte blocks, want %d", bs, dbmanager.DefaultBlockSize)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	db, _ := latest(t, s, m)
	var rows, wide int
	if err := db.QueryRow("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM wide)").Scan(&rows, &wide); err != nil || rows != 3 || wide != 1 {
		t.Errorf("after compaction: t has %d rows, wide %d (%v); want 3 and 1", rows, wide, err)
	}
}

// TestWriterLockRefusesASecondProcess: while another process holds the
// model directory's writer.lock (a db-manager stopped past its lease, in
// the middle of a compaction that has released DuckDB's own lock), a new
// db-manager refuses to open the model instead of writing beside it.
func TestWriterLockRefusesASecondProcess(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "locked"}).ID
	dir := filepath.Join(s.DataDir, m)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "writer.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	err = run(t, s, m, nil).wait(t)
	if !errors.Is(err, dbmanager.ErrFatal) || !strings.Contains(err.Error(), "writer.lock") {
		t.Fatalf("Run with writer.lock held elsewhere = %v; want a fatal error naming the lock", err)
	}
	f.Close()
	s.Submit(t, createTable(m, "create"))
	run(t, s, m, nil)
	s.Outcomes(t, m, wait, "create")
}
