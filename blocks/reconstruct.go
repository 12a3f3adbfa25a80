package blocks

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/model"
)

// ReconstructOptions configure Reconstruct.
type ReconstructOptions struct {
	// Root, when not zero, is the root digest recorded for the version
	// (Postgres, manifest); a map with another root is refused.
	Root Digest
	// Local sources are tried first, in order, for every block (a
	// FileSource of the previous version, a cache); a block they lack or
	// hold with other content comes from Remote.
	Local []Source
	// Remote is the source of every block no local source has (a *Store).
	Remote Source
	// Parallel is the number of blocks read at once (DefaultParallel if 0).
	Parallel int
	// Progress, if set, is called with the bytes of each block written,
	// from several goroutines at once.
	Progress func(n int64)
}

// ReconstructStats says where the bytes of a reconstructed file came from.
type ReconstructStats struct {
	Bytes   int64 // size of the file
	Fetched int64 // bytes of the file read from Remote
	// Downloaded is the object bytes Fetch transferred for them (smaller
	// than Fetched when blocks are compressed); Reconstruct leaves it 0.
	Downloaded int64
	Reused     int64 // bytes read from a local source
	Holes      int64 // bytes of all-zero blocks, not written (the file is sparse there)
}

// Reconstruct builds the file m describes at out: every distinct block is
// read once, from the first local source that has it with the right content
// or else from Remote, verified against its SHA-256 and written at each of
// its offsets, in parallel; all-zero blocks are left as holes. The file is
// written beside out, synced and renamed over it, so a reader of an older
// out keeps a consistent file. It returns an error wrapping ErrCorrupt when
// m does not match opts.Root or Remote has a block with other content, and
// model.ErrNotFound when no source has a block.
func Reconstruct(ctx context.Context, m *Map, out string, opts ReconstructOptions) (ReconstructStats, error) {
	st := ReconstructStats{Bytes: m.Size()}
	if opts.Root != (Digest{}) {
		if root := m.Root(); root != opts.Root {
			return st, fmt.Errorf("block map: %w: its root is %s, the version records %s", ErrCorrupt, root, opts.Root)
		}
	}
	if opts.Remote == nil {
		return st, fmt.Errorf("%w: reconstruct: no remote source", model.ErrInvalid)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".blocks-*")
	if err != nil {
		return st, fmt.Errorf("blocks: reconstruct: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(m.Size()); err != nil {
		return st, fmt.Errorf("blocks: reconstruct: %w", err)
	}

	at := map[Digest][]int{m.Header: {-1}}
	order := []Digest{m.Header}
	for i, d := range m.Blocks {
		if _, ok := at[d]; !ok {
			order = append(order, d)
		}
		at[d] = append(at[d], i)
	}
	zero := Digest(sha256.Sum256(make([]byte, m.BlockSize)))
	var fetched, reused, holes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel(opts.Parallel))
	for _, d := range order {
		offs := at[d]
		size := m.BlockSize
		if offs[0] < 0 {
			size = HeaderSize
		}
		if d == zero && offs[0] >= 0 {
			holes.Add(size * int64(len(offs)))
			if opts.Progress != nil {
				opts.Progress(size * int64(len(offs)))
			}
			continue
		}
		g.Go(func() error {
			buf := make([]byte, size)
			local := false
			for _, src := range opts.Local {
				if err := fill(gctx, src, d, buf); err == nil {
					local = true
					break
				} else if gctx.Err() != nil {
					return gctx.Err()
				}
			}
			if !local {
				if err := fill(gctx, opts.Remote, d, buf); err != nil {
					return fmt.Errorf("blocks: reconstruct %s: %w", out, err)
				}
			}
			for _, i := range offs {
				off := int64(0)
				if i >= 0 {
					off = HeaderSize + int64(i)*m.BlockSize
				}
				if _, err := tmp.WriteAt(buf, off); err != nil {
					return fmt.Errorf("blocks: reconstruct: %w", err)
				}
			}
			n := size * int64(len(offs))
			if local {
				reused.Add(n)
			} else {
				fetched.Add(n)
			}
			if opts.Progress != nil {
				opts.Progress(n)
			}
			return nil
		})
	}
	err = g.Wait()
	st.Fetched, st.Reused, st.Holes = fetched.Load(), reused.Load(), holes.Load()
	if err != nil {
		return st, err
	}
	if err := tmp.Sync(); err != nil {
		return st, fmt.Errorf("blocks: reconstruct: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return st, fmt.Errorf("blocks: reconstruct: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return st, fmt.Errorf("blocks: reconstruct: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil && !errors.Is(err, os.ErrInvalid) {
			return st, fmt.Errorf("blocks: reconstruct: sync %s: %w", filepath.Dir(out), err)
		}
	}
	return st, nil
}
