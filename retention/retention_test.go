package retention_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/snapshot"
)

const m = "gc"

// fixture is a model with a control database and a directory object store.
type fixture struct {
	t        *testing.T
	ctl      *controldb.DB
	objs     objstore.Store
	storeDir string
	dir      string
	version  int64
}

func newFixture(t *testing.T, keep int) *fixture {
	t.Helper()
	ctx := context.Background()
	ctl, err := controldb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctl.Close)
	if err := ctl.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateModel(ctx, controldb.Model{ID: m, SizeClass: "small", Retention: keep}); err != nil {
		t.Fatal(err)
	}
	if err := ctl.ClaimEpoch(ctx, m, 1); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "objects")
	objs, err := objstore.NewDir(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctl: ctl, objs: objs, storeDir: storeDir, dir: dir}
}

// record records the next version with its snapshot at key.
func (f *fixture) record(format, key, sum string) int64 {
	f.t.Helper()
	f.version++
	v := controldb.Version{
		Model: m, Version: f.version, SnapshotURI: key, SHA256: sum, ManifestURI: snapshot.ManifestKey(m, f.version),
		SnapshotFormat: format, FirstSeq: uint64(f.version), LastSeq: uint64(f.version), RequestCount: 1, Epoch: 1, Created: time.Now(),
	}
	if err := f.ctl.PublishVersion(context.Background(), v, nil); err != nil {
		f.t.Fatal(err)
	}
	return f.version
}

// live is a DuckDB file whose versions the fixture publishes as block
// snapshots, the way the db-manager will: capture, upload, map, record.
type live struct {
	f    *fixture
	exec func(string)
	fd   *os.File
	prev *blocks.Map
	maps map[int64]*blocks.Map
}

func (f *fixture) openLive() *live {
	f.t.Helper()
	path := filepath.Join(f.dir, m+".duckdb")
	db, err := duck.Open(context.Background(), path, duck.Options{Threads: 1})
	if err != nil {
		f.t.Fatal(err)
	}
	l := &live{f: f, maps: map[int64]*blocks.Map{}}
	l.exec = func(q string) {
		f.t.Helper()
		if _, err := db.Exec(q); err != nil {
			f.t.Fatalf("%s: %v", q, err)
		}
	}
	l.exec("CHECKPOINT")
	if l.fd, err = os.Open(path); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { db.Close(); l.fd.Close() })
	return l
}

// publish replaces table t with n fresh random rows (so the version has
// blocks no other version has) and publishes the file as the next version.
func (l *live) publish(n int) int64 {
	t := l.f.t
	t.Helper()
	ctx := context.Background()
	l.exec(fmt.Sprintf("CREATE OR REPLACE TABLE t AS SELECT range AS id, random() AS x FROM range(%d)", n))
	l.exec("CHECKPOINT")
	c, err := blocks.NewCapture(ctx, l.fd, l.prev, l.f.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	store, err := blocks.NewStore(l.f.objs, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Upload(ctx, c.Map, c, l.prev); err != nil {
		t.Fatal(err)
	}
	key := snapshot.BlockMapKey(m, l.f.version+1)
	if err := blocks.PutMap(ctx, l.f.objs, key, c.Map); err != nil {
		t.Fatal(err)
	}
	v := l.f.record(controldb.FormatBlocks, key, c.Map.Root().String())
	l.prev, l.maps[v] = c.Map, c.Map
	return v
}

// age sets the modification time of every block object to d ago.
func (f *fixture) age(d time.Duration) {
	f.t.Helper()
	dir := filepath.Join(f.storeDir, "models", m, "blocks")
	ents, err := os.ReadDir(dir)
	if err != nil {
		f.t.Fatal(err)
	}
	old := time.Now().Add(-d)
	for _, e := range ents {
		if err := os.Chtimes(filepath.Join(dir, e.Name()), old, old); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) exists(key string) bool {
	f.t.Helper()
	_, err := f.objs.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

// orphan puts a block object no version references (a version being
// published, or one a crash left) and returns its key.
func (f *fixture) orphan() string {
	f.t.Helper()
	b := make([]byte, 16<<10)
	rand.Read(b)
	key := blocks.BlockKey(m, blocks.Digest(sha256.Sum256(b)))
	if err := f.objs.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		f.t.Fatal(err)
	}
	return key
}

func (f *fixture) run(blockGrace time.Duration) (retention.Result, error) {
	f.t.Helper()
	mdl, err := f.ctl.GetModel(context.Background(), m)
	if err != nil {
		f.t.Fatal(err)
	}
	return retention.Run(context.Background(), f.ctl, f.objs, m, mdl.Retention, 1, blockGrace)
}

// TestBlockGC: blocks of a retained version are never deleted; blocks only
// expired versions list are deleted once the versions expired and the
// objects were uploaded longer than the grace ago; the retained version
// still rebuilds from the store.
func TestBlockGC(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	l := f.openLive()
	for range 3 {
		l.publish(100_000)
	}
	f.age(2 * time.Hour) // uploaded long ago: only the expiry grace protects
	keep := l.maps[3].Digests()
	var gone []blocks.Digest
	var goneBytes int64
	seen := map[blocks.Digest]bool{}
	for _, v := range []int64{1, 2} {
		bm := l.maps[v]
		for d := range bm.Digests() {
			if _, ok := keep[d]; ok || seen[d] {
				continue
			}
			seen[d] = true
			gone = append(gone, d)
			info, err := f.objs.Stat(ctx, blocks.ObjectKey(m, d, bm.Encoding))
			if err != nil {
				t.Fatal(err)
			}
			goneBytes += info.Size
		}
	}
	if len(gone) == 0 {
		t.Fatal("fixture: versions 1 and 2 have no block of their own")
	}

	const grace = 300 * time.Millisecond
	res, err := f.run(grace)
	if err != nil {
		t.Fatal(err)
	}
	if res.Versions != 2 || res.Blocks != 0 {
		t.Fatalf("first run = %+v, want 2 versions expired and no block deleted (expired within the grace)", res)
	}
	for _, v := range []int64{1, 2} {
		if !f.exists(snapshot.BlockMapKey(m, v)) {
			t.Errorf("block map of version %d, expired within the grace, deleted", v)
		}
	}

	time.Sleep(grace + 100*time.Millisecond)
	res, err = f.run(grace)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != len(gone) || res.BlockBytes != goneBytes {
		t.Errorf("second run deleted %d blocks (%d bytes), want %d (%d bytes)", res.Blocks, res.BlockBytes, len(gone), goneBytes)
	}
	for _, d := range gone {
		if f.exists(blocks.ObjectKey(m, d, l.maps[1].Encoding)) {
			t.Errorf("block %s of expired versions only is still stored", d)
		}
	}
	for d := range keep {
		if !f.exists(blocks.ObjectKey(m, d, l.maps[3].Encoding)) {
			t.Fatalf("block %s of the retained version 3 deleted", d)
		}
	}
	for _, v := range []int64{1, 2} {
		if f.exists(snapshot.BlockMapKey(m, v)) {
			t.Errorf("block map of version %d still stored after the grace", v)
		}
	}
	out := filepath.Join(f.dir, "pulled.duckdb")
	if _, _, err := blocks.Fetch(ctx, f.objs, m, snapshot.BlockMapKey(m, 3), l.maps[3].Root(), out, blocks.FetchOptions{}); err != nil {
		t.Fatalf("pull of the retained version after GC: %v", err)
	}
}

// TestBlockGCGrace: an unreferenced block younger than the grace (a
// version being published uploads its blocks before Postgres records it)
// is kept; once older, or with grace 0, it is deleted. Versions of format
// "file" reference no blocks.
func TestBlockGCGrace(t *testing.T) {
	f := newFixture(t, 2)
	f.record(controldb.FormatFile, snapshot.SnapshotKey(m, 1), fmt.Sprintf("%064x", 1))
	young := f.orphan()
	res, err := f.run(retention.DefaultGrace)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 0 || !f.exists(young) {
		t.Fatalf("run = %+v: deleted a block younger than the grace", res)
	}
	f.age(retention.DefaultGrace + time.Minute)
	res, err = f.run(retention.DefaultGrace)
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 1 || res.BlockBytes != 16<<10 || f.exists(young) {
		t.Fatalf("run = %+v: kept an unreferenced block older than the grace", res)
	}
	again := f.orphan()
	if res, err := f.run(0); err != nil || res.Blocks != 1 || f.exists(again) {
		t.Fatalf("run with grace 0 = %+v, %v: want the new block deleted", res, err)
	}
}

// TestBlockGCFailSafe: when a retained version's block map cannot be read
// (missing, or not the map its recorded root names), the run deletes no
// block and says why.
func TestBlockGCFailSafe(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(f *fixture, l *live)
		want  error
	}{
		{"missing", func(f *fixture, l *live) {
			if err := f.objs.Delete(context.Background(), snapshot.BlockMapKey(m, 2)); err != nil {
				t.Fatal(err)
			}
		}, model.ErrNotFound},
		{"corrupt", func(f *fixture, l *live) {
			// Version 2's object holds version 1's (valid) map.
			key := snapshot.BlockMapKey(m, 2)
			if err := f.objs.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			if err := blocks.PutMap(context.Background(), f.objs, key, l.maps[1]); err != nil {
				t.Fatal(err)
			}
		}, blocks.ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, 2)
			l := f.openLive()
			for range 3 {
				l.publish(20_000)
			}
			c.spoil(f, l)
			orphan := f.orphan()
			f.age(2 * time.Hour)
			res, err := f.run(0)
			if !errors.Is(err, c.want) {
				t.Fatalf("run = %v, want %v", err, c.want)
			}
			if res.Blocks != 0 || !f.exists(orphan) {
				t.Fatalf("run = %+v: deleted blocks with a retained map unreadable", res)
			}
			for d := range l.maps[2].Digests() {
				if !f.exists(blocks.ObjectKey(m, d, l.maps[2].Encoding)) {
					t.Fatalf("block %s of retained version 2 deleted", d)
				}
			}
		})
	}
}

// TestDataFileGC: a Parquet data file is deleted only when no retained
// version lists it, no version expired within the grace lists it, and the
// object is older than the grace; a file shared by an expired and a
// retained version stays; a file's column profile goes and stays with it.
func TestDataFileGC(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	put := func(name string) controldb.DataFile {
		data := []byte("parquet " + name)
		sum := fmt.Sprintf("%x", sha256.Sum256(data))
		key := snapshot.ParquetKey(m, "t", sum)
		if err := f.objs.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if err := f.objs.Put(ctx, snapshot.ProfileKey(m, "t", sum), bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		return controldb.DataFile{Key: key, SHA256: sum, Rows: 1, Bytes: int64(len(data))}
	}
	shared := put("shared")
	var own []controldb.DataFile
	for n := int64(1); n <= 3; n++ {
		own = append(own, put(fmt.Sprint(n)))
		v := controldb.Version{
			Model: m, Version: n, SnapshotURI: snapshot.SnapshotKey(m, n), SHA256: fmt.Sprintf("%064x", n), ManifestURI: snapshot.ManifestKey(m, n),
			FirstSeq: uint64(n), LastSeq: uint64(n), RequestCount: 1, Epoch: 1, Created: time.Now(),
			Tables: []controldb.Table{{Name: "t", SHA256: fmt.Sprintf("%064x", n), Rows: 2, Schema: []byte(`[]`), Files: []controldb.DataFile{shared, own[n-1]}}},
		}
		if err := f.ctl.PublishVersion(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	filepath.WalkDir(filepath.Join(f.storeDir, "models", m, "tables"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	// Versions 1 and 2 expire now: within the grace their files stay.
	if _, err := f.run(time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(own, shared) {
		if !f.exists(d.Key) {
			t.Fatalf("%s deleted within the grace of its version's expiry", d.Key)
		}
	}
	if _, err := f.run(0); err != nil {
		t.Fatal(err)
	}
	for i, d := range own {
		if want := i == 2; f.exists(d.Key) != want || f.exists(snapshot.ProfileKey(m, "t", d.SHA256)) != want {
			t.Fatalf("file of version %d or its profile: exists %v, want %v", i+1, !want, want)
		}
	}
	if !f.exists(shared.Key) || !f.exists(snapshot.ProfileKey(m, "t", shared.SHA256)) {
		t.Fatal("a file the retained version lists, or its profile, was deleted")
	}
	// An object no version lists yet (a version being published) is kept
	// while younger than the grace.
	young := put("young")
	if _, err := f.run(time.Hour); err != nil || !f.exists(young.Key) {
		t.Fatalf("young unlisted file deleted: %v", err)
	}
}

// TestModuleGC: a module object goes only when no name of the model
// points at it, no retained version's lineage lists it, the versions that
// listed it expired longer than the grace ago and the object is older
// than the grace.
func TestModuleGC(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	put := func(name string) string {
		data := []byte("\x00asm module " + name)
		d := fmt.Sprintf("%x", sha256.Sum256(data))
		if err := f.objs.Put(ctx, snapshot.ModuleKey(m, d), bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		return d
	}
	register := func(name, digest string) {
		if err := f.ctl.RecordModule(ctx, controldb.Module{Model: m, Name: name, Digest: digest}); err != nil {
			t.Fatal(err)
		}
	}
	replaced, current, usedByRetained, orphan := put("replaced"), put("current"), put("retained"), put("orphan")
	register("gc", replaced)
	register("gc", current) // gc now points at current
	register("x", usedByRetained)
	register("x", current) // x too
	for n, used := range [][]string{{replaced}, {replaced, current}, {usedByRetained}} {
		v := controldb.Version{
			Model: m, Version: int64(n + 1), SnapshotURI: snapshot.SnapshotKey(m, int64(n+1)), SHA256: fmt.Sprintf("%064x", n+1), ManifestURI: snapshot.ManifestKey(m, int64(n+1)),
			FirstSeq: uint64(n + 1), LastSeq: uint64(n + 1), RequestCount: 1, Epoch: 1, Created: time.Now(),
			Lineage: &model.Lineage{Parent: int64(n), Modules: used},
		}
		if err := f.ctl.PublishVersion(ctx, v, nil); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	filepath.WalkDir(filepath.Join(f.storeDir, "modules"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	young := put("young")
	check := func(when string, want map[string]bool) {
		t.Helper()
		for d, w := range want {
			if got := f.exists(snapshot.ModuleKey(m, d)); got != w {
				t.Fatalf("%s: module %s exists %v, want %v", when, d[:8], got, w)
			}
		}
	}
	// Versions 1 and 2 expire now: within the grace, what they list stays;
	// the old orphan goes, the young one stays.
	res, err := f.run(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	check("within the grace", map[string]bool{replaced: true, current: true, usedByRetained: true, orphan: false, young: true})
	if res.Modules != 1 {
		t.Fatalf("deleted %d modules, want 1", res.Modules)
	}
	// Past the grace: the module only expired versions listed and no name
	// points at goes; the one names point at and the one the retained
	// version lists stay.
	if _, err := f.run(0); err != nil {
		t.Fatal(err)
	}
	check("past the grace", map[string]bool{replaced: false, current: true, usedByRetained: true, young: false})
}
