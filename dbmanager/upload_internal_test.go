package dbmanager

import (
	"errors"
	"testing"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/objstore"
)

// TestCutUploadCovers: the publication trusts the blocks the cut uploaded
// only for the same version, root and encoding, after an upload that
// succeeded, and only within the store's ReuseAge (after it a GC may have
// deleted a block no recorded version references yet).
func TestCutUploadCovers(t *testing.T) {
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := blocks.NewStore(dir, "m")
	if err != nil {
		t.Fatal(err)
	}
	s.ReuseAge = time.Minute
	bm := &blocks.Map{BlockSize: 4096, Blocks: []blocks.Digest{{1}, {2}}, Encoding: s.Encoding}
	other := &blocks.Map{BlockSize: 4096, Blocks: []blocks.Digest{{1}, {3}}, Encoding: s.Encoding}
	done := func(u blockUpload) *blockUpload {
		u.done = make(chan struct{})
		close(u.done)
		u.cancel = func() {}
		return &u
	}
	ok := blockUpload{version: 7, root: bm.Root(), encoding: s.Encoding, finished: time.Now()}
	if !done(ok).covers(7, bm, s) {
		t.Fatal("a fresh, successful upload of the same map does not cover it")
	}
	failed := ok
	failed.err = errors.New("put failed")
	stale := ok
	stale.finished = time.Now().Add(-2 * time.Minute)
	raw := ok
	raw.encoding = blocks.EncodingRaw
	for name, c := range map[string]struct {
		u       *blockUpload
		version int64
		m       *blocks.Map
	}{
		"none":           {nil, 7, bm},
		"failed":         {done(failed), 7, bm},
		"older than age": {done(stale), 7, bm},
		"other version":  {done(ok), 8, bm},
		"other root":     {done(ok), 7, other},
		"other encoding": {done(raw), 7, bm},
	} {
		if c.u.covers(c.version, c.m, s) {
			t.Errorf("%s: covers the publication, want not", name)
		}
	}
}
