package retention_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/snapshot"
)

// TestPinSurvivesRetention: a pinned version is never expired and its
// blocks are never deleted, whatever the retention; after unpin, the
// next run expires it and deletes what only it referenced.
func TestPinSurvivesRetention(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	l := f.openLive()
	l.publish(20000)
	pinned := l.publish(20000)
	if _, err := f.ctl.PinVersion(ctx, m, pinned, "release"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.publish(20000)
	}
	f.age(2 * time.Hour)
	res, err := f.run(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if res.Versions != 3 { // 1, 3 and 4; 2 pinned, 5 the newest
		t.Errorf("expired %d versions, want 3", res.Versions)
	}
	v, err := f.ctl.GetVersion(ctx, m, pinned)
	if err != nil {
		t.Fatalf("pinned version %d: %v", pinned, err)
	}
	if len(v.Pins) != 1 || v.Pins[0] != "release" {
		t.Errorf("pins %v, want [release]", v.Pins)
	}
	if n, err := f.ctl.ResolvePin(ctx, m, "release"); err != nil || n != pinned {
		t.Errorf("ResolvePin = %d, %v; want %d", n, err, pinned)
	}
	// Every block of the pinned version is there: it rebuilds.
	out := filepath.Join(t.TempDir(), "pinned.duckdb")
	if _, _, err := snapshot.Fetch(ctx, f.objs, v, out, blocks.FetchOptions{}); err != nil {
		t.Fatalf("the pinned version does not rebuild after retention: %v", err)
	}
	os.Remove(out)
	if _, err := f.ctl.GetVersion(ctx, m, pinned+1); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unpinned version %d: %v, want expired", pinned+1, err)
	}
	if _, err := f.ctl.PinVersion(ctx, m, pinned+1, ""); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("pin of an expired version: %v, want ErrNotFound", err)
	}

	if _, err := f.ctl.Unpin(ctx, m, "release"); err != nil {
		t.Fatal(err)
	}
	if res, err = f.run(0); err != nil {
		t.Fatal(err)
	}
	if res.Versions != 1 || res.Blocks == 0 {
		t.Errorf("after unpin: expired %d versions, deleted %d blocks; want 1 and some", res.Versions, res.Blocks)
	}
	if _, err := f.ctl.GetVersion(ctx, m, pinned); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unpinned version %d: %v, want expired", pinned, err)
	}
	if _, err := f.ctl.Unpin(ctx, m, "release"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("second unpin: %v, want ErrNotFound", err)
	}
}
