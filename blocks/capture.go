package blocks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/teatree/teatree/model"
)

// Capture is the frozen content of a DuckDB file at a cut, kept for upload
// after the writer has moved on: a reflink clone of the file where the
// filesystem has them (XFS, Btrfs: the clone copies no data), else a spool
// with a copy of each block the previous map does not have. It is a Source
// of every block Upload needs for the same prev.
type Capture struct {
	Map     *Map
	Stats   MapStats
	Reflink bool // the capture is a clone of the file, not a spool

	dir string // the capture's directory, removed by Close
	src interface {
		Source
		Close() error
	}
}

var _ Source = (*Capture)(nil)

// NewCapture captures the open DuckDB file live, checkpointed and not
// written to meanwhile (the caller holds off transactions and checkpoints
// until it returns), mapping it incrementally from prev (see Remap). It
// leaves live open (see RemapFile). The capture lives in a new directory
// under dir, which must be on the same filesystem as live for a reflink;
// the spool is synced before NewCapture returns, so OpenSpool can resume an
// upload after a crash. Errors are Remap's.
func NewCapture(ctx context.Context, live *os.File, prev *Map, dir string) (*Capture, error) {
	cdir, err := os.MkdirTemp(dir, ".capture-")
	if err != nil {
		return nil, fmt.Errorf("blocks: capture: %w", err)
	}
	c, err := capture(ctx, live, prev, cdir)
	if err != nil {
		os.RemoveAll(cdir)
		return nil, err
	}
	return c, nil
}

func capture(ctx context.Context, live *os.File, prev *Map, cdir string) (*Capture, error) {
	path := live.Name()
	if err := checkWAL(path); err != nil {
		return nil, err
	}
	clonePath := filepath.Join(cdir, cloneFile)
	switch clone, err := reflink(live, clonePath); {
	case err == nil:
		m, st, err := remap(ctx, clone, path, prev, nil)
		if err != nil {
			clone.Close()
			return nil, err
		}
		return &Capture{Map: m, Stats: st, Reflink: true, dir: cdir, src: newFileSource(clone, m)}, nil
	case !errors.Is(err, errors.ErrUnsupported):
		return nil, fmt.Errorf("blocks: capture %s: %w", path, err)
	}
	f, err := os.OpenFile(filepath.Join(cdir, spoolFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blocks: capture: %w", err)
	}
	sp := &Spool{f: f, at: map[Digest]spoolEntry{}}
	var end int64
	m, st, err := remap(ctx, live, path, prev, func(i int, d Digest, b []byte) error {
		if _, ok := sp.at[d]; ok {
			return nil
		}
		if _, err := f.WriteAt(b, end); err != nil {
			return fmt.Errorf("blocks: spool: %w", err)
		}
		sp.at[d] = spoolEntry{Offset: end, Size: int64(len(b))}
		end += int64(len(b))
		return nil
	})
	if err == nil {
		err = sp.commit(cdir)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Capture{Map: m, Stats: st, dir: cdir, src: sp}, nil
}

// Block implements Source.
func (c *Capture) Block(ctx context.Context, d Digest, buf []byte) error {
	return c.src.Block(ctx, d, buf)
}

// Dir is the capture's directory (for OpenSpool after a crash).
func (c *Capture) Dir() string { return c.dir }

// Release closes the capture's files and keeps its directory, for
// ReopenCapture (a capture recorded for a later upload).
func (c *Capture) Release() error { return c.src.Close() }

// Close removes the capture.
func (c *Capture) Close() error {
	c.src.Close()
	return os.RemoveAll(c.dir)
}

const (
	cloneFile  = "clone.duckdb"
	spoolFile  = "spool.blocks"
	spoolIndex = "spool.json"
)

// Spool is the copy of a capture's new blocks: spool.blocks with the blocks
// one after the other, and spool.json mapping each digest to its offset and
// size. It is a Source.
type Spool struct {
	f  *os.File
	at map[Digest]spoolEntry
}

type spoolEntry struct {
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
}

var _ Source = (*Spool)(nil)

// commit syncs the blocks, then writes and syncs the index and the
// directory: a spool with an index is complete.
func (s *Spool) commit(dir string) error {
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	idx, err := json.Marshal(s.at)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, spoolIndex), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	_, err = f.Write(idx)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	return nil
}

// OpenSpool reopens the spool of a capture in dir (Capture.Dir), to resume
// an upload after a crash. It returns an error wrapping model.ErrNotFound if
// dir holds no complete spool.
func OpenSpool(dir string) (*Spool, error) {
	idx, err := os.ReadFile(filepath.Join(dir, spoolIndex))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blocks: %w: no complete spool in %s", model.ErrNotFound, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("blocks: %w", err)
	}
	sp := &Spool{}
	if err := json.Unmarshal(idx, &sp.at); err != nil {
		return nil, fmt.Errorf("%w: spool index in %s: %v", model.ErrInvalid, dir, err)
	}
	if sp.f, err = os.Open(filepath.Join(dir, spoolFile)); err != nil {
		return nil, fmt.Errorf("blocks: %w", err)
	}
	return sp, nil
}

// Block implements Source.
func (s *Spool) Block(ctx context.Context, d Digest, buf []byte) error {
	e, ok := s.at[d]
	if !ok {
		return fmt.Errorf("block %s: %w in the spool", d, model.ErrNotFound)
	}
	if e.Size != int64(len(buf)) {
		return fmt.Errorf("spooled block %s: %w: %d bytes, want %d", d, ErrCorrupt, e.Size, len(buf))
	}
	if _, err := s.f.ReadAt(buf, e.Offset); err != nil {
		return fmt.Errorf("blocks: spool: %w", err)
	}
	return nil
}

// Close closes the spool file.
func (s *Spool) Close() error { return s.f.Close() }

// ReopenCapture reopens the capture in dir (Capture.Dir) whose map is m, to
// resume an upload after a crash: its spool, or its reflink clone. It
// returns an error wrapping model.ErrNotFound if dir holds neither.
func ReopenCapture(ctx context.Context, dir string, m *Map) (interface {
	Source
	Close() error
}, error) {
	sp, err := OpenSpool(dir)
	switch {
	case err == nil:
		return sp, nil
	case !errors.Is(err, model.ErrNotFound):
		return nil, err
	}
	clone := filepath.Join(dir, cloneFile)
	if _, serr := os.Stat(clone); serr != nil {
		return nil, err
	}
	return OpenFile(ctx, clone, m)
}
