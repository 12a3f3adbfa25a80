package blocks_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/objstore"
)

// TestMeasureFlights measures the block costs of versions of the 3 M-row
// flights model: set TEATREE_BLOCKS_MEASURE=1 and link data/ (scripts/
// fetch-flights.sh). The figures are logged (go test -v); docs/decisions.md
// quotes them.
func TestMeasureFlights(t *testing.T) {
	if os.Getenv("TEATREE_BLOCKS_MEASURE") == "" {
		t.Skip("set TEATREE_BLOCKS_MEASURE=1 to measure")
	}
	parquet, err := filepath.Abs("../data/flights-3m.parquet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(parquet); err != nil {
		t.Skipf("no flights data: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "flights.duckdb")
	db, err := duck.Open(ctx, path, duck.Options{Threads: 2, ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return time.Since(start)
	}
	exec("CREATE TABLE flights AS SELECT * FROM read_parquet(" + duck.Literal(parquet) + ")")
	exec("CHECKPOINT")
	live, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	objs, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store, _ := blocks.NewStore(objs, "flights")

	c, err := blocks.NewCapture(ctx, live, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	up, err := store.Upload(ctx, c.Map, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("version 1: %d bytes, %d blocks; capture (full map + spool) %v; upload %d objects (%d bytes) to a directory store in %v",
		c.Map.Size(), len(c.Map.Blocks), c.Stats.Duration, up.Uploaded, up.Bytes, time.Since(start))
	c.Close()

	// One object per block against one object for the file (a pack).
	whole, _ := os.ReadFile(path)
	comparePuts(t, "directory store", objs, whole)
	if bin, _ := miniotest.Binary(); bin != "" {
		s3, err := objstore.NewS3(ctx, miniotest.Shared(t).Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		comparePuts(t, "MinIO", s3, whole)
	}

	prev := mustMap(t, path)
	laptop := filepath.Join(t.TempDir(), "flights.duckdb")
	if _, err := blocks.Reconstruct(ctx, prev, laptop, blocks.ReconstructOptions{Remote: store}); err != nil {
		t.Fatal(err)
	}
	for v, change := range []string{
		"INSERT INTO flights SELECT * FROM flights LIMIT 1",
		"INSERT INTO flights SELECT * FROM flights LIMIT 1",
		"INSERT INTO flights SELECT * FROM flights LIMIT 1",
		"UPDATE flights SET delay = delay + 1 WHERE hash(rowid) % 100 = 0",
		"INSERT INTO flights SELECT * FROM flights LIMIT 1",
	} {
		apply := exec(change)
		ckpt := exec("CHECKPOINT")
		c, err := blocks.NewCapture(ctx, live, prev, dir)
		if err != nil {
			t.Fatal(err)
		}
		full := mustMapStats(t, path)
		start := time.Now()
		up, err := store.Upload(ctx, c.Map, c, prev)
		if err != nil {
			t.Fatal(err)
		}
		upload := time.Since(start)
		local, err := blocks.OpenFile(ctx, laptop, nil)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		rs, err := blocks.Reconstruct(ctx, c.Map, laptop, blocks.ReconstructOptions{Root: c.Map.Root(), Local: []blocks.Source{local}, Remote: store})
		if err != nil {
			t.Fatal(err)
		}
		pull := time.Since(start)
		local.Close()
		js, _ := c.Map.MarshalJSON()
		t.Logf("version %d, %q: apply %v, CHECKPOINT %v; %d bytes, %d blocks, %d changed (%d hashed, %d scrubbed); capture %v (full map %v); upload %d objects, %d bytes in %v; pull over version %d fetched %d bytes, reused %d, in %v; block map JSON %d bytes",
			v+2, change, apply, ckpt, c.Map.Size(), len(c.Map.Blocks), c.Stats.Changed, c.Stats.Hashed, c.Stats.Scrubbed, c.Stats.Duration, full.Duration, up.Uploaded, up.Bytes, upload, v+1, rs.Fetched, rs.Reused, pull, len(js))
		prev = c.Map
		c.Close()
	}
}

func mustMap(t *testing.T, path string) *blocks.Map {
	t.Helper()
	m, _, err := blocks.MapFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustMapStats(t *testing.T, path string) blocks.MapStats {
	t.Helper()
	_, st, err := blocks.MapFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// comparePuts logs the time of n PUTs of 256 KiB, 8 at once, against one
// PUT of the whole file.
func comparePuts(t *testing.T, name string, objs objstore.Store, whole []byte) {
	ctx := context.Background()
	start := time.Now()
	if err := objs.Put(ctx, "pack", bytes.NewReader(whole), int64(len(whole))); err != nil {
		t.Fatal(err)
	}
	one := time.Since(start)
	buf := make([]byte, 262144)
	n := len(whole) / len(buf)
	for _, par := range []int{blocks.DefaultParallel, 32} {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(par)
		start = time.Now()
		for i := 0; i < n; i++ {
			g.Go(func() error {
				return objs.Put(gctx, fmt.Sprintf("put/%d/%d", par, i), bytes.NewReader(buf), int64(len(buf)))
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		t.Logf("%s: %d bytes as one object %v; as %d PUTs of 256 KiB, %d at once, %v (%.0f PUT/s; 2 GiB = 8192 blocks would take %v)",
			name, len(whole), one, n, par, d, float64(n)/d.Seconds(), d*8192/time.Duration(n))
	}
}

// TestMeasureLarge maps a synthetic file of about 1.5 GB (set
// TEATREE_BLOCKS_MEASURE=large): full against incremental map, and what a
// one-row append and a 1 % update change.
func TestMeasureLarge(t *testing.T) {
	if os.Getenv("TEATREE_BLOCKS_MEASURE") != "large" {
		t.Skip("set TEATREE_BLOCKS_MEASURE=large to measure")
	}
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "large.duckdb")
	db, err := duck.Open(ctx, path, duck.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return time.Since(start)
	}
	load := exec("CREATE TABLE big AS SELECT range AS id, hash(range) AS h, random() AS x FROM range(80000000)")
	load += exec("CHECKPOINT")
	live, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	prev, full, err := blocks.RemapFile(ctx, live, nil)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := prev.MarshalJSON()
	t.Logf("80 M rows: load %v; %d bytes, %d blocks; full map %v; block map JSON %d bytes", load, prev.Size(), len(prev.Blocks), full.Duration, len(js))
	store, _ := blocks.NewStore(newDir(t), "large")
	for _, change := range []string{
		"INSERT INTO big VALUES (-1, 0, 0.5)",
		"INSERT INTO big VALUES (-2, 0, 0.5)",
		"UPDATE big SET x = x + 1 WHERE id % 100 = 0",
		"INSERT INTO big VALUES (-3, 0, 0.5)",
	} {
		apply := exec(change)
		ckpt := exec("CHECKPOINT")
		c, err := blocks.NewCapture(ctx, live, prev, dir)
		if err != nil {
			t.Fatal(err)
		}
		up, err := store.Upload(ctx, c.Map, c, prev)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%q: apply %v, CHECKPOINT %v; %d bytes; capture (incremental map + spool) %v: %d changed, %d hashed, %d scrubbed; upload %d objects, %d bytes",
			change, apply, ckpt, c.Map.Size(), c.Stats.Duration, c.Stats.Changed, c.Stats.Hashed, c.Stats.Scrubbed, up.Uploaded, up.Bytes)
		prev = c.Map
		c.Close()
	}
}
