package objstore

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
)

// Batch is a Store whose Puts become durable together, at Sync: what a
// publication uploads before Postgres records the version that names it.
// On a directory store a Put syncs the object's file before renaming it
// into place (so a visible object is always whole) but leaves the
// directory's sync to Sync, which syncs each directory the batch put or
// found an object in once, instead of once per object; on any other store
// a Put is durable when it returns and Sync does nothing. An object the
// batch found (Stat) is treated as one it put: it may be the unsynced put
// of an earlier, interrupted attempt. Sync must succeed before anything
// durable names an object of the batch. A Batch is safe for concurrent
// use.
type Batch struct {
	Store
	dir  *Dir // nil: not a directory store
	mu   sync.Mutex
	dirs map[string]struct{} // to sync
}

// NewBatch returns a batch of puts to s.
func NewBatch(s Store) *Batch {
	d, _ := s.(*Dir)
	return &Batch{Store: s, dir: d, dirs: map[string]struct{}{}}
}

// Put implements Store; the object is durable after Sync.
func (b *Batch) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if b.dir == nil {
		return b.Store.Put(ctx, key, r, size)
	}
	p, err := b.dir.put(ctx, key, r, size)
	if err != nil {
		return err
	}
	b.touch(p)
	return nil
}

// Stat implements Store; an object found is synced by Sync.
func (b *Batch) Stat(ctx context.Context, key string) (Info, error) {
	info, err := b.Store.Stat(ctx, key)
	if err == nil && b.dir != nil {
		b.touch(b.dir.URI(key))
	}
	return info, err
}

func (b *Batch) touch(path string) {
	b.mu.Lock()
	b.dirs[filepath.Dir(path)] = struct{}{}
	b.mu.Unlock()
}

// Sync makes every object the batch put or found durable: it syncs their
// directories. Objects put after it need another Sync.
func (b *Batch) Sync(ctx context.Context) error {
	b.mu.Lock()
	dirs := b.dirs
	b.dirs = map[string]struct{}{}
	b.mu.Unlock()
	for dir := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			b.mu.Lock()
			for d := range dirs { // still to sync
				b.dirs[d] = struct{}{}
			}
			b.mu.Unlock()
			return fmt.Errorf("objstore: sync %s: %w", dir, err)
		}
	}
	return nil
}
