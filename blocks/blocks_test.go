package blocks_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

// live is a read-write DuckDB file that stays open, as the db-manager's.
type live struct {
	t    *testing.T
	db   *sql.DB
	path string
	fd   *os.File // held open until DuckDB closes the file (see RemapFile)
}

func openLive(t *testing.T, dir string) *live {
	t.Helper()
	path := filepath.Join(dir, "m.duckdb")
	db, err := duck.Open(context.Background(), path, duck.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CHECKPOINT"); err != nil { // creates the file
		t.Fatal(err)
	}
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(); fd.Close() })
	return &live{t: t, db: db, path: path, fd: fd}
}

func (l *live) exec(q string) {
	l.t.Helper()
	if _, err := l.db.Exec(q); err != nil {
		l.t.Fatalf("%s: %v", q, err)
	}
}

// withRows creates table t with n rows (id, a repeated name, a random
// double) and checkpoints.
func (l *live) withRows(n int) *live {
	l.exec(fmt.Sprintf(`CREATE TABLE t AS SELECT range AS id, 'name-' || (range %% 1000) AS v, random() AS x FROM range(%d)`, n))
	l.exec("CHECKPOINT")
	return l
}

func (l *live) appendRow() {
	l.exec("INSERT INTO t VALUES (-1, 'appended', 0.5)")
	l.exec("CHECKPOINT")
}

// rows reads the table of the file at path, opened read-only in a fresh
// DuckDB instance.
func rows(t *testing.T, path string) (n int64, sum int64) {
	t.Helper()
	db, err := duck.Open(context.Background(), path, duck.Options{Threads: 1, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*), sum(id) FROM t").Scan(&n, &sum); err != nil {
		t.Fatalf("query %s: %v", path, err)
	}
	return n, sum
}

func sameFile(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("%s (%d bytes) differs from %s (%d bytes)", got, len(b), want, len(a))
	}
}

func mapFile(t *testing.T, path string, prev *blocks.Map) (*blocks.Map, blocks.MapStats) {
	t.Helper()
	m, st, err := blocks.Remap(context.Background(), path, prev)
	if err != nil {
		t.Fatal(err)
	}
	return m, st
}

// stores runs f against the directory object store, and against MinIO
// when it is built.
func stores(t *testing.T, f func(t *testing.T, objs objstore.Store)) {
	t.Run("dir", func(t *testing.T) {
		objs, err := objstore.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f(t, objs)
	})
	t.Run("s3", func(t *testing.T) {
		srv := miniotest.Shared(t)
		objs, err := objstore.NewS3(context.Background(), srv.Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		f(t, objs)
	})
}

// counting counts what a Source hands out.
type counting struct {
	src           blocks.Source
	blocks, bytes atomic.Int64
}

func (c *counting) Block(ctx context.Context, d blocks.Digest, buf []byte) error {
	if err := c.src.Block(ctx, d, buf); err != nil {
		return err
	}
	c.blocks.Add(1)
	c.bytes.Add(int64(len(buf)))
	return nil
}

func TestHeaderOfDuckDB156(t *testing.T) {
	l := openLive(t, t.TempDir()).withRows(1000)
	f, err := os.Open(l.path)
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
	// DuckDB 1.5.6 writes storage version number 64 and serialization
	// compatibility 1 (v0.10.0) unless told otherwise, 256 KiB blocks.
	want := blocks.Header{VersionNumber: 64, LibraryVersion: "v1.5.6", Iteration: h.Iteration, BlockCount: h.BlockCount, BlockSize: 262144, SerializationCompatibility: 1}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	st, _ := f.Stat()
	// A checkpoint writes the header, then truncates trailing free blocks.
	if got := uint64((st.Size() - blocks.HeaderSize) / h.BlockSize); got > h.BlockCount || h.Iteration == 0 {
		t.Errorf("file has %d blocks after the header, header says %d (iteration %d)", got, h.BlockCount, h.Iteration)
	}
}

func TestRoundTrip(t *testing.T) {
	stores(t, func(t *testing.T, objs objstore.Store) {
		ctx := context.Background()
		dir := t.TempDir()
		l := openLive(t, dir).withRows(200_000)
		l.db.Close()
		wantRows, wantSum := rows(t, l.path)

		m, st := mapFile(t, l.path, nil)
		if !st.Full || st.Hashed != st.Blocks || st.Blocks < 4 {
			t.Fatalf("full map stats %+v", st)
		}
		js, err := m.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := blocks.ParseMap(js)
		if err != nil {
			t.Fatal(err)
		}
		if decoded.Root() != m.Root() || decoded.Size() != m.Size() {
			t.Fatalf("decoded map root %s size %d, want %s %d", decoded.Root(), decoded.Size(), m.Root(), m.Size())
		}
		store, err := blocks.NewStore(objs, "m")
		if err != nil {
			t.Fatal(err)
		}
		src, err := blocks.OpenFile(ctx, l.path, m)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		up, err := store.Upload(ctx, m, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		if up.Uploaded != up.Distinct || up.Bytes > m.Size() {
			t.Fatalf("first upload %+v of a %d-byte file", up, m.Size())
		}
		// Unchanged blocks are never uploaded again.
		again, err := store.Upload(ctx, m, src, nil)
		if err != nil || again.Uploaded != 0 || again.Present != up.Distinct {
			t.Fatalf("second upload %+v, %v", again, err)
		}

		out := filepath.Join(t.TempDir(), "pulled.duckdb")
		var progress atomic.Int64
		rs, err := blocks.Reconstruct(ctx, decoded, out, blocks.ReconstructOptions{Root: m.Root(), Remote: store, Progress: func(n int64) { progress.Add(n) }})
		if err != nil {
			t.Fatal(err)
		}
		if rs.Bytes != m.Size() || rs.Fetched+rs.Holes != rs.Bytes || rs.Reused != 0 || progress.Load() != rs.Bytes {
			t.Fatalf("reconstruct stats %+v, progress %d", rs, progress.Load())
		}
		sameFile(t, l.path, out)
		if n, sum := rows(t, out); n != wantRows || sum != wantSum {
			t.Fatalf("pulled file has %d rows (sum %d), want %d (%d)", n, sum, wantRows, wantSum)
		}
		// A wrong recorded root is refused before anything is fetched.
		other := m.Root()
		other[0] ^= 1
		if _, err := blocks.Reconstruct(ctx, decoded, out+"2", blocks.ReconstructOptions{Root: other, Remote: store}); !errors.Is(err, blocks.ErrCorrupt) {
			t.Fatalf("wrong root: %v", err)
		}
	})
}

func TestOneRowAppendChangesFewBlocks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := openLive(t, dir).withRows(1_000_000)
	m1, full := mapFile(t, l.path, nil)
	objs, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store, _ := blocks.NewStore(objs, "m")
	if _, err := store.Upload(ctx, m1, mustOpen(t, l.path, m1), nil); err != nil {
		t.Fatal(err)
	}
	l.appendRow()
	m2, inc := mapFile(t, l.path, m1)
	if inc.Full || m2.Generation != 1 {
		t.Fatalf("incremental map was full: %+v", inc)
	}
	// The incremental map is the full map of the new file.
	m2full, _ := mapFile(t, l.path, nil)
	if diff := cmp.Diff(m2full.Blocks, m2.Blocks); diff != "" || m2full.Header != m2.Header {
		t.Fatalf("incremental map differs from a full map (-full +incremental):\n%s", diff)
	}
	// DuckDB 1.5 re-uses the metadata of unchanged row groups at
	// CHECKPOINT: a one-row append writes a handful of blocks.
	if inc.Changed == 0 || inc.Changed > 8 {
		t.Errorf("a one-row append changed %d of %d blocks, want 1 to 8", inc.Changed, inc.Blocks)
	}
	up, err := store.Upload(ctx, m2, mustOpen(t, l.path, m2), m1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1M rows: file %d bytes, %d blocks of %d; full map %v (%d hashed); one-row append + CHECKPOINT: %d blocks changed, incremental map %v (%d hashed, %d scrubbed); upload %d objects, %d bytes",
		m1.Size(), full.Blocks, m1.BlockSize, full.Duration, full.Hashed, inc.Changed, inc.Duration, inc.Hashed, inc.Scrubbed, up.Uploaded, up.Bytes)
	if up.Bytes > int64(inc.Changed)*m2.BlockSize+blocks.HeaderSize {
		t.Errorf("uploaded %d bytes for %d changed blocks", up.Bytes, inc.Changed)
	}
}

func mustOpen(t *testing.T, path string, m *blocks.Map) *blocks.FileSource {
	t.Helper()
	s, err := blocks.OpenFile(context.Background(), path, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPullReusesPreviousVersion(t *testing.T) {
	stores(t, func(t *testing.T, objs objstore.Store) {
		ctx := context.Background()
		dir := t.TempDir()
		l := openLive(t, dir).withRows(300_000)
		store, _ := blocks.NewStore(objs, "m")

		// Version 1: captured, uploaded, pulled to the laptop.
		c1, err := blocks.NewCapture(ctx, l.fd, nil, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Upload(ctx, c1.Map, c1, nil); err != nil {
			t.Fatal(err)
		}
		c1.Close()
		laptop := filepath.Join(t.TempDir(), "m.duckdb")
		if _, err := blocks.Reconstruct(ctx, c1.Map, laptop, blocks.ReconstructOptions{Remote: store}); err != nil {
			t.Fatal(err)
		}

		// Version 2: one row more; the capture spools only the new blocks.
		l.appendRow()
		c2, err := blocks.NewCapture(ctx, l.fd, c1.Map, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		up, err := store.Upload(ctx, c2.Map, c2, c1.Map)
		if err != nil {
			t.Fatal(err)
		}
		if up.Uploaded == 0 || up.Uploaded > c2.Stats.Changed+1 {
			t.Fatalf("upload %+v for %d changed blocks", up, c2.Stats.Changed)
		}

		// The laptop builds version 2 over its version 1 file, reusing it.
		old, err := os.Open(laptop) // a reader with version 1 open
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		local := mustOpen(t, laptop, nil)
		remote := &counting{src: store}
		rs, err := blocks.Reconstruct(ctx, c2.Map, laptop, blocks.ReconstructOptions{Root: c2.Map.Root(), Local: []blocks.Source{local}, Remote: remote})
		if err != nil {
			t.Fatal(err)
		}
		if remote.bytes.Load() != up.Raw || rs.Fetched != up.Raw {
			t.Errorf("fetched %d bytes (%d blocks), stats %+v; the new blocks are %d bytes (%d stored)", remote.bytes.Load(), remote.blocks.Load(), rs, up.Raw, up.Bytes)
		}
		if rs.Reused+rs.Fetched+rs.Holes != rs.Bytes || rs.Reused < rs.Bytes/2 {
			t.Errorf("stats %+v: most of the file should be reused", rs)
		}
		t.Logf("300k rows: %d-byte file, version 2 fetched %d bytes, reused %d", rs.Bytes, rs.Fetched, rs.Reused)
		l.db.Close()
		sameFile(t, l.path, laptop)
		if n, _ := rows(t, laptop); n != 300_001 {
			t.Fatalf("version 2 has %d rows", n)
		}
		// The reader that had version 1 open still reads version 1.
		if st, _ := old.Stat(); st.Size() != c1.Map.Size() {
			t.Fatalf("the open version 1 changed under its reader: %d bytes", st.Size())
		}
	})
}

func TestCorruptBlockRefused(t *testing.T) {
	stores(t, func(t *testing.T, objs objstore.Store) {
		ctx := context.Background()
		dir := t.TempDir()
		l := openLive(t, dir).withRows(50_000)
		m, _ := mapFile(t, l.path, nil)
		store, _ := blocks.NewStore(objs, "m")
		if _, err := store.Upload(ctx, m, mustOpen(t, l.path, m), nil); err != nil {
			t.Fatal(err)
		}
		// Flip one byte of one stored block, stored well encoded: only
		// the digest tells.
		victim := m.Blocks[len(m.Blocks)/2]
		key := blocks.ObjectKey("m", victim, m.Encoding)
		buf := make([]byte, m.BlockSize)
		if err := store.Block(ctx, victim, buf); err != nil {
			t.Fatal(err)
		}
		buf[1000] ^= 0xff
		enc, _ := zstd.NewWriter(nil)
		if obj := enc.EncodeAll(buf, nil); objs.Put(ctx, key, bytes.NewReader(obj), int64(len(obj))) != nil {
			t.Fatal("put")
		}
		out := filepath.Join(t.TempDir(), "pulled.duckdb")
		_, err := blocks.Reconstruct(ctx, m, out, blocks.ReconstructOptions{Remote: store})
		if !errors.Is(err, blocks.ErrCorrupt) || !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), victim.String()) {
			t.Fatalf("corrupt block: %v", err)
		}
		t.Logf("refused: %v", err)
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused reconstruction left %s: %v", out, err)
		}
		if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
			t.Fatalf("temporary files left: %v", entries)
		}
		// A truncated object is refused too.
		if err := objs.Put(ctx, key, bytes.NewReader(buf[:100]), 100); err != nil {
			t.Fatal(err)
		}
		if _, err := blocks.Reconstruct(ctx, m, out, blocks.ReconstructOptions{Remote: store}); !errors.Is(err, blocks.ErrCorrupt) {
			t.Fatalf("short block: %v", err)
		}
		// An upload repairs an object that does not read back whole.
		if up, err := store.Upload(ctx, m, mustOpen(t, l.path, m), nil); err != nil || up.Uploaded != 1 {
			t.Fatalf("repair upload %+v: %v", up, err)
		}
		// A local copy with a bad block costs that block only: it comes
		// from the store.
		local := filepath.Join(t.TempDir(), "local.duckdb")
		data, _ := os.ReadFile(l.path)
		idx := len(m.Blocks) / 3
		data[blocks.HeaderSize+int64(idx)*m.BlockSize+500] ^= 0xff
		if err := os.WriteFile(local, data, 0o644); err != nil {
			t.Fatal(err)
		}
		rs, err := blocks.Reconstruct(ctx, m, out, blocks.ReconstructOptions{Local: []blocks.Source{mustOpen(t, local, m)}, Remote: store})
		if err != nil {
			t.Fatal(err)
		}
		if rs.Fetched != m.BlockSize*int64(count(m.Blocks, m.Blocks[idx])) {
			t.Fatalf("fetched %d bytes, want the one bad block: %+v", rs.Fetched, rs)
		}
		sameFile(t, l.path, out)
	})
}

func count(ds []blocks.Digest, d blocks.Digest) int {
	n := 0
	for _, x := range ds {
		if x == d {
			n++
		}
	}
	return n
}

// TestEncodings: blocks are stored compressed, a map records it, maps of
// raw blocks (before compression) still read, and the first compressed
// version after a raw one puts every block under its compressed key.
func TestEncodings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	objs := newDir(t)
	l := openLive(t, dir).withRows(50_000)
	m1, _ := mapFile(t, l.path, nil)
	raw, _ := blocks.NewStore(objs, "m")
	raw.Encoding = blocks.EncodingRaw
	up1, err := raw.Upload(ctx, m1, mustOpen(t, l.path, m1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Encoding != blocks.EncodingRaw || up1.Bytes != up1.Raw {
		t.Fatalf("raw upload: map encoding %q, %+v", m1.Encoding, up1)
	}
	l.appendRow()
	m2, _ := mapFile(t, l.path, m1)
	store, _ := blocks.NewStore(objs, "m")
	up2, err := store.Upload(ctx, m2, mustOpen(t, l.path, m2), m1)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Encoding != blocks.EncodingZstd || up2.Known != 0 || up2.Uploaded != up2.Distinct {
		t.Fatalf("first compressed upload after a raw one: encoding %q, %+v; want every block put", m2.Encoding, up2)
	}
	for d := range m2.Digests() {
		if _, err := objs.Stat(ctx, blocks.ObjectKey("m", d, blocks.EncodingZstd)); err != nil {
			t.Fatalf("block %s: %v", d, err)
		}
	}
	// Both maps round-trip through JSON and rebuild their files.
	for _, bm := range []*blocks.Map{m1, m2} {
		key := "maps/" + bm.Root().String()
		if err := blocks.PutMap(ctx, objs, key, bm); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "pulled.duckdb")
		got, st, err := blocks.Fetch(ctx, objs, "m", key, bm.Root(), out, blocks.FetchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Encoding != bm.Encoding {
			t.Fatalf("map encoding %q read back as %q", bm.Encoding, got.Encoding)
		}
		if bm == m2 {
			sameFile(t, l.path, out)
			if st.Downloaded >= st.Fetched {
				t.Fatalf("compressed blocks downloaded %d bytes for %d fetched", st.Downloaded, st.Fetched)
			}
		}
		t.Logf("encoding %q: fetched %d bytes, downloaded %d", bm.Encoding, st.Fetched, st.Downloaded)
	}
	// A hostile object that inflates past a block is refused, not decoded.
	victim := m2.Blocks[0]
	enc, _ := zstd.NewWriter(nil)
	bomb := enc.EncodeAll(make([]byte, 64<<20), nil)
	if err := objs.Put(ctx, blocks.ObjectKey("m", victim, blocks.EncodingZstd), bytes.NewReader(bomb), int64(len(bomb))); err != nil {
		t.Fatal(err)
	}
	err = store.Block(ctx, victim, make([]byte, m2.BlockSize))
	if !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("a 64 MiB zstd bomb: %v, want ErrCorrupt", err)
	}
	t.Logf("refused: %v", err)
}
