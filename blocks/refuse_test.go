package blocks_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

func TestRefusesFileWithWAL(t *testing.T) {
	dir := t.TempDir()
	l := openLive(t, dir)
	l.exec("CREATE TABLE t AS SELECT range AS id FROM range(10)") // in the WAL until a checkpoint
	for name, f := range map[string]func() error{
		"MapFile": func() error { _, _, err := blocks.MapFile(context.Background(), l.path); return err },
		"NewCapture": func() error {
			c, err := blocks.NewCapture(context.Background(), l.fd, nil, dir)
			if err == nil {
				c.Close()
			}
			return err
		},
	} {
		if err := f(); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "write-ahead log") || !strings.Contains(err.Error(), "CHECKPOINT") {
			t.Errorf("%s of a file with a WAL: %v", name, err)
		}
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".capture-*")); len(entries) != 0 {
		t.Errorf("a refused capture left %v", entries)
	}
	l.exec("CHECKPOINT")
	if _, _, err := blocks.MapFile(context.Background(), l.path); err != nil {
		t.Fatalf("after CHECKPOINT: %v", err)
	}
}

func newDir(t *testing.T) *objstore.Dir {
	t.Helper()
	objs, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// setMain rewrites a little-endian word of header slot 0 and its checksum.
func setMain(data []byte, off int, v uint64) {
	binary.LittleEndian.PutUint64(data[off:], v)
	binary.LittleEndian.PutUint64(data, blocks.Checksum(data[8:blocks.SlotSize]))
}

func TestRefusesWrongFiles(t *testing.T) {
	l := openLive(t, t.TempDir()).withRows(100_000)
	l.db.Close()
	good, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mapFile(t, l.path, nil)
	if len(m.Blocks) < 3 {
		t.Fatalf("%d blocks", len(m.Blocks))
	}
	block := func(i int) int { return blocks.HeaderSize + i*int(m.BlockSize) }
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"short", func(b []byte) []byte { return b[:100] }, "shorter than the 12288-byte header"},
		{"not duckdb", func(b []byte) []byte { copy(b[8:], "SQLite format 3"); return b }, "no DUCK magic"},
		{"database header checksum", func(b []byte) []byte { b[blocks.SlotSize+100] ^= 1; return b }, "corrupt DuckDB header: slot 1"},
		{"main header checksum", func(b []byte) []byte { b[200] ^= 1; return b }, "corrupt DuckDB header: slot 0"},
		{"encrypted", func(b []byte) []byte { setMain(b, 20, 1); return b }, "encrypted"},
		{"future storage version", func(b []byte) []byte { setMain(b, 12, 99); return b }, "storage version number 99"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-int(m.BlockSize)/2] }, "truncated or being written"},
		{"torn block", func(b []byte) []byte { b[block(1)+4000] ^= 1; return b }, "block 1 at offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.duckdb")
			if err := os.WriteFile(path, tc.edit(append([]byte(nil), good...)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := blocks.MapFile(context.Background(), path)
			if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrInvalid saying %q", err, tc.want)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is more than one line: %q", err)
			}
		})
	}
}

func TestScrubCorrectsStaleDigests(t *testing.T) {
	l := openLive(t, t.TempDir()).withRows(300_000)
	m, _ := mapFile(t, l.path, nil)
	if len(m.Blocks) < 6 {
		t.Fatalf("%d blocks, want 6 or more", len(m.Blocks))
	}
	// Pretend blocks 3 and 5 changed without a change of DuckDB's
	// checksum: the previous map has other digests for them.
	truth := append([]blocks.Digest(nil), m.Blocks...)
	m.Blocks[3][0] ^= 1
	m.Blocks[5][0] ^= 1
	m.Generation = 2 // the next map is generation 3: it scrubs block 3
	next, st := mapFile(t, l.path, m)
	if next.Blocks[3] != truth[3] || st.Mismatch != 1 || st.Scrubbed == 0 || st.Changed != 1 {
		t.Fatalf("scrub of block 3: stats %+v", st)
	}
	if next.Blocks[5] == truth[5] {
		t.Fatalf("block 5 was re-hashed outside its scrub generation")
	}
	// Within ScrubEvery maps every block is hashed again.
	scrubbed := st.Scrubbed
	for g := 0; g < blocks.ScrubEvery-1; g++ {
		next, st = mapFile(t, l.path, next)
		scrubbed += st.Scrubbed
	}
	if next.Blocks[5] != truth[5] || scrubbed != len(m.Blocks) {
		t.Fatalf("after %d maps: block 5 corrected %v, %d of %d blocks scrubbed", blocks.ScrubEvery, next.Blocks[5] == truth[5], scrubbed, len(m.Blocks))
	}
}

func TestCaptureSpoolResumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLive(t, dir).withRows(200_000)
	m1, _ := mapFile(t, l.path, nil)
	store, _ := blocks.NewStore(newDir(t), "m")
	if _, err := store.Upload(ctx, m1, mustOpen(t, l.path, m1), nil); err != nil {
		t.Fatal(err)
	}
	l.appendRow()
	frozen, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := blocks.NewCapture(ctx, l.fd, m1, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reflink {
		t.Skip("the filesystem clones files; the spool is not used")
	}
	// The writer moves on; the spool keeps the cut.
	l.exec("INSERT INTO t SELECT range, 'more', 1 FROM range(100000)")
	l.exec("CHECKPOINT")
	if c.Stats.Changed == 0 {
		t.Fatalf("capture stats %+v", c.Stats)
	}
	sp, err := blocks.OpenSpool(c.Dir()) // as after a crash
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	// Version 1's blocks are in the store; the spool has the rest of 2's.
	store2, _ := blocks.NewStore(newDir(t), "m")
	up, err := store2.Upload(ctx, c.Map, sp, nil)
	if !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a spool has only the new blocks, yet a full upload from it gave %+v, %v", up, err)
	}
	up, err = store.Upload(ctx, c.Map, sp, m1)
	if err != nil || up.Uploaded != c.Stats.Changed+1 {
		t.Fatalf("upload from the reopened spool %+v: %v (changed %d)", up, err, c.Stats.Changed)
	}
	out := filepath.Join(t.TempDir(), "v2.duckdb")
	if _, err := blocks.Reconstruct(ctx, c.Map, out, blocks.ReconstructOptions{Root: c.Map.Root(), Remote: store}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, frozen) {
		t.Fatal("version 2 from the spool is not the file as captured")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left %s", c.Dir())
	}
}

// TestMapsFileShorterThanHeaderCount: a checkpoint writes the header with
// the block count before it truncates the free blocks at the end, so a
// valid file can be shorter than its header says.
func TestMapsFileShorterThanHeaderCount(t *testing.T) {
	ctx := context.Background()
	l := openLive(t, t.TempDir()).withRows(300_000)
	l.exec("CREATE TABLE tail AS SELECT range AS id, random() AS x FROM range(300000)")
	l.exec("CHECKPOINT")
	l.exec("DROP TABLE tail")
	l.exec("CHECKPOINT")
	l.db.Close()
	hdr := make([]byte, blocks.HeaderSize)
	f, err := os.Open(l.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	h, err := blocks.ReadHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	if n := uint64((st.Size() - blocks.HeaderSize) / h.BlockSize); n >= h.BlockCount {
		t.Skipf("DuckDB did not truncate below the header's count (%d blocks, header %d)", n, h.BlockCount)
	}
	m, _, err := blocks.MapFile(ctx, l.path)
	if err != nil {
		t.Fatalf("a truncated checkpoint: %v", err)
	}
	store, _ := blocks.NewStore(newDir(t), "m")
	if _, err := store.Upload(ctx, m, mustOpen(t, l.path, m), nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pulled.duckdb")
	if _, err := blocks.Reconstruct(ctx, m, out, blocks.ReconstructOptions{Root: m.Root(), Remote: store}); err != nil {
		t.Fatal(err)
	}
	sameFile(t, l.path, out)
	if n, _ := rows(t, out); n != 300_000 {
		t.Fatalf("%d rows", n)
	}
}

// TestCaptureReflink runs a capture on a filesystem that clones files
// (XFS, Btrfs): set TEATREE_BLOCKS_REFLINK_DIR to a directory on one. The
// capture must be a clone, and the version it froze must come back
// byte-identical after the writer moved on.
func TestCaptureReflink(t *testing.T) {
	root := os.Getenv("TEATREE_BLOCKS_REFLINK_DIR")
	if root == "" {
		t.Skip("set TEATREE_BLOCKS_REFLINK_DIR to a directory on XFS or Btrfs")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp(root, "blocks-reflink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := openLive(t, dir).withRows(300_000)
	m1, _, err := blocks.RemapFile(ctx, l.fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.appendRow()
	frozen, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := blocks.NewCapture(ctx, l.fd, m1, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Reflink {
		t.Fatalf("%s does not clone files", root)
	}
	l.exec("INSERT INTO t SELECT range, 'more', 1 FROM range(100000)")
	l.exec("CHECKPOINT")
	store, _ := blocks.NewStore(newDir(t), "m")
	if _, err := store.Upload(ctx, c.Map, c, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "v.duckdb")
	if _, err := blocks.Reconstruct(ctx, c.Map, out, blocks.ReconstructOptions{Root: c.Map.Root(), Remote: store}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, frozen) {
		t.Fatal("the reconstructed version is not the file as captured")
	}
}
