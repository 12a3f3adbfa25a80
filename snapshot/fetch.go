package snapshot

import (
	"context"
	"fmt"
	"os"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/objstore"
)

// Fetch writes the snapshot of version v to out and says where its bytes
// came from. A block snapshot (controldb.FormatBlocks) is reconstructed
// from the block store with blocks.Fetch, reusing opts.Reuse and verifying
// every block and the map's root; a whole-file snapshot of an older release
// is downloaded and its sha256 checked. On error nothing is left at out (an
// earlier file there is kept). The block map is returned for a block
// snapshot (nil for a whole file): passed in the next Fetch's opts.Maps for
// out, it saves hashing out to reuse its blocks.
func Fetch(ctx context.Context, store objstore.Store, v controldb.Version, out string, opts blocks.FetchOptions) (*blocks.Map, blocks.ReconstructStats, error) {
	if v.SnapshotFormat == controldb.FormatBlocks {
		root, err := blocks.ParseDigest(v.SHA256)
		if err != nil {
			return nil, blocks.ReconstructStats{}, fmt.Errorf("snapshot: %s version %d: %w", v.Model, v.Version, err)
		}
		return blocks.Fetch(ctx, store, v.Model, v.SnapshotURI, root, out, opts)
	}
	st := blocks.ReconstructStats{Bytes: v.Bytes, Fetched: v.Bytes}
	tmp := out + ".fetch"
	sum, err := objstore.GetFile(ctx, store, v.SnapshotURI, tmp)
	if err != nil {
		os.Remove(tmp)
		return nil, st, err
	}
	if sum != v.SHA256 {
		os.Remove(tmp)
		return nil, st, fmt.Errorf("snapshot of %s version %d: %w: downloaded sha256 %s, Postgres records %s", v.Model, v.Version, blocks.ErrCorrupt, sum, v.SHA256)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return nil, st, fmt.Errorf("snapshot: %w", err)
	}
	return nil, st, nil
}

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
