package client

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// Version returns version n of model m (0: the latest).
//
// Errors: model.ErrNotFound when the model does not exist, or has no such
// version (none published yet, or expired), the message saying which;
// ErrUnreachable when Postgres fails.
func (c *Client) Version(ctx context.Context, m string, n int64) (controldb.Version, error) {
	ctl, err := c.ctl()
	if err != nil {
		return controldb.Version{}, err
	}
	v, err := ctl.GetVersion(ctx, m, n)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, model.ErrNotFound) {
		return v, unreachable(err)
	}
	// controldb's not-found errors already say what is missing; this only
	// tells a model that does not exist from one without a version.
	if n == 0 {
		if _, merr := ctl.GetModel(ctx, m); errors.Is(merr, model.ErrNotFound) {
			return v, merr
		}
	}
	return v, err
}

// Versions lists the versions of model m, oldest first: the retained
// ones, and with expired also those retention removed (Expired set).
//
// Errors: model.ErrNotFound when the model does not exist; ErrUnreachable
// when Postgres fails.
func (c *Client) Versions(ctx context.Context, m string, expired bool) ([]controldb.Version, error) {
	ctl, err := c.ctl()
	if err != nil {
		return nil, err
	}
	if _, err := ctl.GetModel(ctx, m); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return nil, err
		}
		return nil, unreachable(err)
	}
	vs, err := ctl.ListVersions(ctx, m, expired)
	if err != nil {
		return nil, unreachable(err)
	}
	return vs, nil
}

// Pulled is what Pull wrote. For a block snapshot Fetched + Reused is
// Bytes less its all-zero blocks, which are neither (the file is sparse
// there); for a whole-file snapshot Fetched is Bytes. Downloaded is what
// the fetched blocks cost in transfer: their objects are compressed.
type Pulled struct {
	Model      string `json:"model"`
	Version    int64  `json:"version"`
	Path       string `json:"path"`   // absolute
	Digest     string `json:"digest"` // the block map's root, or the file's sha256
	Bytes      int64  `json:"bytes"`
	Fetched    int64  `json:"fetched_bytes"`    // bytes of the file that came from the object store
	Reused     int64  `json:"reused_bytes"`     // bytes of the file copied from local files
	Downloaded int64  `json:"downloaded_bytes"` // object bytes transferred for Fetched
}

// Pull writes the snapshot of version v (from Version) to the file at
// path and verifies it; the file opens with the stock DuckDB CLI
// (duckdb -readonly PATH).
//
// A block snapshot is built from the blocks local files already hold (the
// file at path, an earlier version usually, and the cached snapshots of
// the model under Options.CacheDir), downloading only the missing blocks,
// 8 at a time. Every block is verified against its sha256, the block map
// against the root digest Postgres records, and the tables' row counts
// against the content index. A whole-file snapshot (versions written
// before block snapshots) is downloaded whole and verified by its sha256,
// size and row counts. The file is built beside path and renamed over it:
// on any error nothing changes at path, and a reader that has the old
// file open keeps reading the old version. The block map of the file is
// kept under CacheDir/pull so the next Pull over it does not hash it.
//
// Errors: ErrCorrupt for a snapshot whose blocks, block map or file do
// not match their digests, or that is incomplete in the object store; an
// error naming the table for row counts that differ from the content
// index; ErrUnreachable when the object store fails; a *fs.PathError for
// a local file.
func (c *Client) Pull(ctx context.Context, v controldb.Version, path string) (Pulled, error) {
	store, err := c.store()
	if err != nil {
		return Pulled{}, err
	}
	reuse := []string{path}
	if cached, err := c.cachedSnapshots(v.Model); err == nil {
		reuse = append(reuse, cached...)
	}
	return c.download(ctx, store, v, path, reuse)
}

// cachedSnapshots lists the snapshot cache entries of model m in this
// stack, newest version first.
func (c *Client) cachedSnapshots(m string) ([]string, error) {
	ents, err := os.ReadDir(c.snapshotDir(m))
	if err != nil {
		return nil, err
	}
	type entry struct {
		path    string
		version int64
	}
	var all []entry
	for _, d := range ents {
		n, _, ok := strings.Cut(d.Name(), "-")
		v, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".duckdb") {
			continue // downloads in progress start with '.'
		}
		all = append(all, entry{filepath.Join(c.snapshotDir(m), d.Name()), v})
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(b.version, a.version) })
	paths := make([]string, len(all))
	for i, x := range all {
		paths[i] = x.path
	}
	return paths, nil
}

// snapshotDir is the cache directory of model m's snapshots in this
// stack: stacks are told apart by a digest of the object store's address,
// with the endpoint of an S3 store (two stacks can both have a model
// "shop" with a version 3).
func (c *Client) snapshotDir(m string) string {
	addr := c.opts.Store.URI("")
	if s, ok := c.opts.Store.(*objstore.S3); ok {
		addr += " " + s.Config().Endpoint
	}
	stack := sha256.Sum256([]byte(addr))
	return filepath.Join(c.opts.CacheDir, "snapshots", hex.EncodeToString(stack[:8]), m)
}

// progress returns the progress callbacks for a download of v (no-ops
// without Options.Progress).
func (c *Client) progress(v controldb.Version) (func(int64), func()) {
	if c.opts.Progress == nil {
		return nil, func() {}
	}
	add, done := c.opts.Progress(v)
	if done == nil {
		done = func() {}
	}
	return add, done
}

// reuseOptions are the blocks.FetchOptions of a pull of a block snapshot
// reusing the files in reuse (their recorded block maps, else hashed now;
// a file that is not a DuckDB file package blocks maps is skipped).
func (c *Client) reuseOptions(ctx context.Context, reuse []string) blocks.FetchOptions {
	opts := blocks.FetchOptions{Maps: map[string]*blocks.Map{}}
	for _, p := range reuse {
		if m := c.localMap(ctx, p); m != nil {
			opts.Maps[p] = m
			opts.Reuse = append(opts.Reuse, p)
		}
	}
	return opts
}

// fetchErr is the user's message for err, snapshot.Fetch's error writing
// v to out: corrupt or incomplete in the store (ErrCorrupt), a local
// file's error as it is, else the store is unreachable.
func fetchErr(ctx context.Context, v controldb.Version, out string, err error) error {
	blocksFormat := v.SnapshotFormat == controldb.FormatBlocks
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, snapshot.ErrFormat):
		return err
	case errors.Is(err, model.ErrInvalid) && blocksFormat: // blocks.ErrCorrupt, or a block map that does not parse
		return mark(fmt.Errorf("snapshot of %s version %d is corrupt in the object store, nothing written: %s", v.Model, v.Version, unnamed(err, out)), ErrCorrupt)
	case errors.Is(err, model.ErrInvalid):
		return mark(fmt.Errorf("snapshot of %s version %d is corrupt: %s", v.Model, v.Version, strings.TrimPrefix(err.Error(), fmt.Sprintf("snapshot of %s version %d: ", v.Model, v.Version))), ErrCorrupt)
	case errors.Is(err, model.ErrNotFound) && blocksFormat:
		return mark(fmt.Errorf("snapshot of %s version %d is incomplete in the object store (%s), nothing written: %s", v.Model, v.Version, v.SnapshotURI, unnamed(err, out)), ErrCorrupt)
	case errors.Is(err, model.ErrNotFound):
		return fmt.Errorf("snapshot of %s version %d is missing from the object store (%s): %w", v.Model, v.Version, v.SnapshotURI, err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err // a local file
	}
	return unreachable(fmt.Errorf("download %s: %w", v.SnapshotURI, err))
}

// unnamed is the message of err from Reconstruct without the name of the
// temporary file it was building, which the user never sees.
func unnamed(err error, tmp string) string {
	return strings.Replace(err.Error(), "blocks: reconstruct "+tmp+": ", "", 1)
}

// mapEntry is the block map of a file the client wrote (or mapped), kept
// in the cache under pull/<sha256 of the absolute path>.json so that the
// next pull does not hash the file again. It is used while the file has
// the same size and modification time; otherwise the file is mapped
// again. A stale entry that passes costs only misses: every block read
// from the file is verified.
type mapEntry struct {
	Path  string      `json:"path"`
	Size  int64       `json:"size"`
	MTime time.Time   `json:"mtime"`
	Map   *blocks.Map `json:"map"`
}

// mapEntryUnder is where the map of the file at path is kept in the cache
// under base.
func mapEntryUnder(base, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(base, "pull", hex.EncodeToString(sum[:])+".json"), nil
}

// localMap returns the block map of the DuckDB file at path: the recorded
// one when it is current, else a fresh blocks.MapFile, recorded for next
// time. It returns nil when there is no file there or it is not a file
// package blocks maps (then it is not reused).
func (c *Client) localMap(ctx context.Context, path string) *blocks.Map {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	key, err := mapEntryUnder(c.opts.CacheDir, path)
	if err != nil {
		return nil
	}
	if b, err := os.ReadFile(key); err == nil {
		var ent mapEntry
		if json.Unmarshal(b, &ent) == nil && ent.Map != nil && ent.Size == st.Size() && ent.MTime.Equal(st.ModTime()) {
			return ent.Map
		}
	}
	m, _, err := blocks.MapFile(ctx, path)
	if err != nil {
		return nil
	}
	c.saveMap(path, m)
	return m
}

// saveMap records m as the map of the file at path. It is a cache: a
// failure only means the next pull hashes the file.
func (c *Client) saveMap(path string, m *blocks.Map) {
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	key, err := mapEntryUnder(c.opts.CacheDir, path)
	if err != nil {
		return
	}
	abs, _ := filepath.Abs(path)
	b, err := json.Marshal(mapEntry{Path: abs, Size: st.Size(), MTime: st.ModTime(), Map: m})
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(key), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(key), ".map-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		os.Rename(tmp.Name(), key)
	}
}

// download writes v's snapshot to path, reusing the blocks of the files in
// reuse for a block snapshot (see fetchBlocks), else downloading the whole
// file; either way into a temporary file next to path, verified (sha256
// or root, then the row counts) before it is renamed into place. On any
// error nothing changes at path.
func (c *Client) download(ctx context.Context, store objstore.Store, v controldb.Version, path string, reuse []string) (Pulled, error) {
	p := Pulled{Model: v.Model, Version: v.Version, Digest: v.SHA256, Bytes: v.Bytes}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return p, err
	}
	tmp, err := os.CreateTemp(dir, ".teactl-pull-*")
	if err != nil {
		return p, err
	}
	defer os.Remove(tmp.Name())
	tmp.Close() // snapshot.Fetch writes it by name
	var opts blocks.FetchOptions
	if v.SnapshotFormat == controldb.FormatBlocks {
		opts = c.reuseOptions(ctx, reuse)
	}
	add, done := c.progress(v)
	opts.Progress = add
	bm, st, err := snapshot.Fetch(ctx, store, v, tmp.Name(), opts)
	done()
	if err != nil {
		return p, fetchErr(ctx, v, tmp.Name(), err)
	}
	p.Fetched, p.Reused, p.Downloaded = st.Fetched, st.Reused, st.Downloaded
	if err := snapshot.Verify(ctx, tmp.Name(), v); err != nil {
		return p, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return p, err
	}
	if bm != nil {
		c.saveMap(path, bm)
	}
	p.Path, _ = filepath.Abs(path)
	return p, nil
}
