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
// earlier file there is kept).
func Fetch(ctx context.Context, store objstore.Store, v controldb.Version, out string, opts blocks.FetchOptions) (blocks.ReconstructStats, error) {
	if v.SnapshotFormat == controldb.FormatBlocks {
		root, err := blocks.ParseDigest(v.SHA256)
		if err != nil {
			return blocks.ReconstructStats{}, fmt.Errorf("snapshot: %s version %d: %w", v.Model, v.Version, err)
		}
		_, st, err := blocks.Fetch(ctx, store, v.Model, v.SnapshotURI, root, out, opts)
		return st, err
	}
	st := blocks.ReconstructStats{Bytes: v.Bytes, Fetched: v.Bytes}
	tmp := out + ".fetch"
	sum, err := objstore.GetFile(ctx, store, v.SnapshotURI, tmp)
	if err != nil {
		os.Remove(tmp)
		return st, err
	}
	if sum != v.SHA256 {
		os.Remove(tmp)
		return st, fmt.Errorf("snapshot of %s version %d: %w: downloaded sha256 %s, Postgres records %s", v.Model, v.Version, blocks.ErrCorrupt, sum, v.SHA256)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return st, fmt.Errorf("snapshot: %w", err)
	}
	return st, nil
}
