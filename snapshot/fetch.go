package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/objstore"
)

// Fetch writes the snapshot of version v to out and says where its bytes
// came from. A block snapshot (controldb.FormatBlocks) is reconstructed
// from the block store with blocks.Fetch, reusing opts.Reuse and verifying
// every block and the map's root; a whole-file snapshot of an older release
// is downloaded and its size and sha256 checked; opts.Progress counts the
// bytes of either. A format this build does not know is ErrFormat. On error nothing is left at out (an
// earlier file there is kept). The block map is returned for a block
// snapshot (nil for a whole file): passed in the next Fetch's opts.Maps for
// out, it saves hashing out to reuse its blocks.
func Fetch(ctx context.Context, store objstore.Store, v controldb.Version, out string, opts blocks.FetchOptions) (*blocks.Map, blocks.ReconstructStats, error) {
	switch v.SnapshotFormat {
	case controldb.FormatBlocks:
		root, err := blocks.ParseDigest(v.SHA256)
		if err != nil {
			return nil, blocks.ReconstructStats{}, fmt.Errorf("snapshot: %s version %d: %w", v.Model, v.Version, err)
		}
		return blocks.Fetch(ctx, store, v.BlockNamespace(), v.SnapshotURI, root, out, opts)
	case controldb.FormatFile, "":
		st := blocks.ReconstructStats{Bytes: v.Bytes, Fetched: v.Bytes, Downloaded: v.Bytes}
		return nil, st, fetchFile(ctx, store, v, out, opts.Progress)
	default:
		return nil, blocks.ReconstructStats{}, fmt.Errorf("snapshot of %s version %d has format %q, which this build does not read: %w", v.Model, v.Version, v.SnapshotFormat, ErrFormat)
	}
}

// ErrFormat is the error of a snapshot format this build does not know
// (written by a newer release): upgrade.
var ErrFormat = errors.New("upgrade to a release that does")

// fetchFile downloads the whole-file snapshot of v to out through a
// temporary file, counting bytes through progress (nil: none), and checks
// its size and sha256. Errors: the store's (model.ErrNotFound for a
// missing object), blocks.ErrCorrupt for a file that does not match.
func fetchFile(ctx context.Context, store objstore.Store, v controldb.Version, out string, progress func(int64)) error {
	rc, err := store.Get(ctx, v.SnapshotURI)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".fetch-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	if progress != nil {
		w = io.MultiWriter(w, progressWriter(progress))
	}
	n, err := io.Copy(w, rc)
	if err != nil {
		return fmt.Errorf("download %s: %w", v.SnapshotURI, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != v.SHA256 || n != v.Bytes {
		return fmt.Errorf("snapshot of %s version %d: %w: downloaded %d bytes with sha256 %s, Postgres records %d bytes with %s", v.Model, v.Version, blocks.ErrCorrupt, n, sum, v.Bytes, v.SHA256)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// progressWriter counts what is written through it.
type progressWriter func(int64)

func (f progressWriter) Write(p []byte) (int, error) { f(int64(len(p))); return len(p), nil }

// Verify re-reads the snapshot file at path (Describe) and checks its
// tables and row counts against v's content index: what teactl pull and
// the reader check before they use a fetched version. The error says which
// table differs.
func Verify(ctx context.Context, path string, v controldb.Version) error {
	tables, err := Describe(ctx, path)
	if err != nil {
		return err
	}
	want := make([]Table, len(v.Tables))
	for i, t := range v.Tables {
		want[i] = Table{Name: t.Name, Rows: t.Rows}
	}
	if err := SameRows(want, tables); err != nil {
		return fmt.Errorf("snapshot of %s version %d does not match its content index: %w", v.Model, v.Version, err)
	}
	return nil
}
