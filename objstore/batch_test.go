package objstore_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teatree/teatree/objstore"
)

func TestBatchContract(t *testing.T) {
	contract(t, func(t *testing.T) objstore.Store {
		d, err := objstore.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return objstore.NewBatch(d)
	})
}

// A batch on a directory store syncs each directory once, at Sync, for
// the objects it put and those it found; a plain Put syncs its directory
// every time.
func TestBatchSyncsEachDirectoryOnce(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := objstore.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	b := objstore.NewBatch(d)
	before := objstore.DirSyncs()
	for i := range 20 {
		if err := b.Put(ctx, fmt.Sprintf("models/m/blocks/%02d", i), strings.NewReader("block"), 5); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "models/m/data/t/f.parquet", strings.NewReader("file"), 4); err != nil {
		t.Fatal(err)
	}
	if n := objstore.DirSyncs() - before; n != 0 {
		t.Fatalf("%d directory syncs before Sync, want 0", n)
	}
	rc, err := b.Get(ctx, "models/m/blocks/07") // visible and whole before Sync
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "block" {
		t.Fatalf("got %q", got)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := objstore.DirSyncs() - before; n != 2 {
		t.Fatalf("%d directory syncs for 21 objects in 2 directories, want 2", n)
	}
	if err := b.Sync(ctx); err != nil || objstore.DirSyncs()-before != 2 {
		t.Fatalf("a second Sync with nothing new synced again (%d) or failed: %v", objstore.DirSyncs()-before, err)
	}

	// An object found by Stat may be an unsynced put of an interrupted
	// attempt: its directory is synced too.
	b2 := objstore.NewBatch(d)
	if _, err := b2.Stat(ctx, "models/m/blocks/03"); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Stat(ctx, "models/m/blocks/no-such"); err == nil {
		t.Fatal("stat of a missing object succeeded")
	}
	mark := objstore.DirSyncs()
	if err := b2.Sync(ctx); err != nil || objstore.DirSyncs()-mark != 1 {
		t.Fatalf("sync after a found object: %d directory syncs, want 1 (%v)", objstore.DirSyncs()-mark, err)
	}

	mark = objstore.DirSyncs()
	for i := range 3 {
		if err := d.Put(ctx, fmt.Sprintf("models/m/other/%d", i), strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := objstore.DirSyncs() - mark; n != 3 {
		t.Fatalf("Dir.Put: %d directory syncs for 3 objects, want 3", n)
	}
}

// A failed Sync reports the directory and keeps what it did not sync for
// the next Sync.
func TestBatchSyncFailure(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := objstore.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	b := objstore.NewBatch(d)
	if err := b.Put(ctx, "models/m/blocks/a", strings.NewReader("a"), 1); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "models", "m", "blocks")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("sync of a removed directory: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mark := objstore.DirSyncs()
	if err := b.Sync(ctx); err != nil || objstore.DirSyncs()-mark != 1 {
		t.Fatalf("the failed directory was not synced again: %d syncs, %v", objstore.DirSyncs()-mark, err)
	}
}
