package blocks

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

// ErrCorrupt reports a block or block map whose content does not match its
// digest; it wraps model.ErrInvalid.
var ErrCorrupt = fmt.Errorf("content does not match its sha256 (%w)", model.ErrInvalid)

// DefaultParallel is the number of concurrent block transfers when a
// Store's or ReconstructOptions' Parallel is 0.
const DefaultParallel = 8

// Source gives the content of blocks by digest. Block fills buf with the
// block whose SHA-256 is d (len(buf) is the block size, or HeaderSize for a
// map's header) and returns an error wrapping model.ErrNotFound when the
// source does not have it. Callers verify what they get.
type Source interface {
	Block(ctx context.Context, d Digest, buf []byte) error
}

// fill reads block d from src into buf and checks its digest.
func fill(ctx context.Context, src Source, d Digest, buf []byte) error {
	if err := src.Block(ctx, d, buf); err != nil {
		return err
	}
	if got := Digest(sha256.Sum256(buf)); got != d {
		return fmt.Errorf("block %s: %w: read %s", d, ErrCorrupt, got)
	}
	return nil
}

// BlockKey is the object key of the block with digest d in block
// namespace ns: the model whose prefix holds the blocks, the model itself
// or, for a fork, the namespace of its source (controldb.Model.Namespace).
// Every block key is derived here.
func BlockKey(ns string, d Digest) string { return "models/" + ns + "/blocks/" + d.String() }

// Store keeps the blocks of a model's snapshots in an object store, one
// object per distinct block, named by its SHA-256 (ObjectKey), so that
// versions share their unchanged blocks. It is a Source.
type Store struct {
	objs  objstore.Store
	model string
	// Encoding is how Upload stores blocks and Block reads them
	// (EncodingZstd from NewStore; Fetch sets the map's).
	Encoding string
	// Parallel is the number of concurrent uploads (DefaultParallel if 0).
	Parallel int
	// ReuseAge is how old a stored block that the previous map lacks may
	// be for Upload to reuse it rather than put it again (DefaultReuseAge
	// if 0). It must be well under the grace period of block GC
	// (retention.DefaultGrace, 1 hour), so that a block a GC may
	// delete is never relied on.
	ReuseAge time.Duration

	downloaded atomic.Int64
}

var _ Source = (*Store)(nil)

// NewStore returns the block store of block namespace ns (BlockKey) in
// objs. It returns an error wrapping model.ErrInvalid if ns is not a valid
// model id.
func NewStore(objs objstore.Store, ns string) (*Store, error) {
	if err := model.ValidateID(ns); err != nil {
		return nil, err
	}
	return &Store{objs: objs, model: ns, Encoding: EncodingZstd}, nil
}

// Block implements Source: it downloads the block object of d into buf,
// decoding it with s.Encoding. An object that does not decode to len(buf)
// bytes is reported as ErrCorrupt.
func (s *Store) Block(ctx context.Context, d Digest, buf []byte) error {
	key := ObjectKey(s.model, d, s.Encoding)
	rc, err := s.objs.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	limit := int64(len(buf))
	if s.Encoding != EncodingRaw {
		limit = maxEncoded(limit)
	}
	obj, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return fmt.Errorf("blocks: get %s: %w", key, err)
	}
	s.downloaded.Add(int64(len(obj)))
	if int64(len(obj)) > limit {
		return fmt.Errorf("%s: %w: longer than %d bytes", key, ErrCorrupt, limit)
	}
	if err := decode(obj, s.Encoding, buf); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// Downloaded is the number of object bytes Block has read.
func (s *Store) Downloaded() int64 { return s.downloaded.Load() }

// UploadStats says what an upload cost.
type UploadStats struct {
	Distinct int   // distinct blocks in the map, the header included
	Known    int   // skipped because the previous map has them
	Present  int   // found in the store already (an earlier, interrupted upload)
	Uploaded int   // blocks put
	Bytes    int64 // bytes put (encoded)
	Raw      int64 // the same blocks' DuckDB bytes
	// Time spent reading and verifying, encoding and putting the blocks
	// put, summed over the concurrent uploads.
	Read, Encode, Put time.Duration
}

// DefaultReuseAge is Store.ReuseAge when it is 0.
const DefaultReuseAge = 10 * time.Minute

// Upload stores the blocks of m that the store does not hold: every
// distinct digest of m that prev (the map of the last published version,
// whose blocks are all stored; nil for none) does not have and that is not
// already stored (a young object that reads back whole), read from src and verified before it
// is put, encoded with s.Encoding, which Upload records in m.Encoding.
// Every block of m is durable in the store when Upload returns nil. A
// prev of another encoding has its blocks under other keys, so every block
// is put (the first version after blocks became compressed). It is
// idempotent: a repeated or resumed upload puts only what is missing. A
// block of src that does not match m fails the upload with ErrCorrupt.
func (s *Store) Upload(ctx context.Context, m *Map, src Source, prev *Map) (UploadStats, error) {
	m.Encoding = s.Encoding
	var had map[Digest]struct{}
	if prev != nil && prev.Encoding == s.Encoding {
		had = prev.Digests()
	}
	todo := m.Digests()
	st := UploadStats{Distinct: len(todo)}
	// The blocks' directory is synced once, at the end, rather than
	// after every block (objstore.Batch): the blocks are durable when
	// Upload returns.
	objs := objstore.NewBatch(s.objs)
	var present, uploaded, bytesPut, raw, tRead, tEncode, tPut atomic.Int64
	parent := ctx
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel(s.Parallel))
	for d := range todo {
		if _, ok := had[d]; ok {
			st.Known++
			continue
		}
		size := m.BlockSize
		if d == m.Header {
			size = HeaderSize
		}
		g.Go(func() error {
			key := ObjectKey(s.model, d, s.Encoding)
			// A block stored a while ago that no retained version has may
			// be deleted by a GC any moment: it is put again, which makes
			// it young enough for GC's grace period to protect it. A young
			// one (an interrupted upload of this version) is read back and
			// verified: a compressed object's size does not say it is whole.
			if info, err := objs.Stat(ctx, key); err == nil && time.Since(info.Modified) < cmp.Or(s.ReuseAge, DefaultReuseAge) {
				if fill(ctx, s, d, make([]byte, size)) == nil {
					present.Add(1)
					return nil
				}
			} else if err != nil && !errors.Is(err, model.ErrNotFound) {
				return fmt.Errorf("blocks: stat %s: %w", key, err)
			}
			t0 := time.Now()
			buf := make([]byte, size)
			if err := fill(ctx, src, d, buf); err != nil {
				return fmt.Errorf("blocks: upload %s: %w", key, err)
			}
			t1 := time.Now()
			obj := encode(buf, s.Encoding)
			t2 := time.Now()
			if err := objs.Put(ctx, key, bytes.NewReader(obj), int64(len(obj))); err != nil {
				return fmt.Errorf("blocks: upload %s: %w", key, err)
			}
			tRead.Add(int64(t1.Sub(t0)))
			tEncode.Add(int64(t2.Sub(t1)))
			tPut.Add(int64(time.Since(t2)))
			uploaded.Add(1)
			bytesPut.Add(int64(len(obj)))
			raw.Add(size)
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = objs.Sync(parent)
	}
	st.Present, st.Uploaded, st.Bytes, st.Raw = int(present.Load()), int(uploaded.Load()), bytesPut.Load(), raw.Load()
	st.Read, st.Encode, st.Put = time.Duration(tRead.Load()), time.Duration(tEncode.Load()), time.Duration(tPut.Load())
	return st, err
}

func parallel(n int) int {
	if n <= 0 {
		return DefaultParallel
	}
	return n
}

// FileSource is a DuckDB file with its block map, as a Source: the local
// copy of an earlier version that a pull reuses, or the clone of a capture.
type FileSource struct {
	f     *os.File
	m     *Map
	index map[Digest]int // digest -> first block with it; -1 for the header
}

var _ Source = (*FileSource)(nil)

// OpenFile opens the file at path as a Source of the blocks m lists. With
// a nil m the file is mapped first (every block hashed, see MapFile). The
// content is verified on every read, so a stale m only costs the blocks
// that no longer match. Close releases this process's POSIX locks on the
// file (see RemapFile): do not open a file DuckDB has open in this process.
func OpenFile(ctx context.Context, path string, m *Map) (*FileSource, error) {
	if m == nil {
		var err error
		if m, _, err = MapFile(ctx, path); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blocks: %w", err)
	}
	return newFileSource(f, m), nil
}

func newFileSource(f *os.File, m *Map) *FileSource {
	idx := make(map[Digest]int, len(m.Blocks)+1)
	for i := len(m.Blocks) - 1; i >= 0; i-- {
		idx[m.Blocks[i]] = i
	}
	idx[m.Header] = -1
	return &FileSource{f: f, m: m, index: idx}
}

// Map is the block map the source was opened with.
func (s *FileSource) Map() *Map { return s.m }

// Block implements Source.
func (s *FileSource) Block(ctx context.Context, d Digest, buf []byte) error {
	i, ok := s.index[d]
	if !ok {
		return fmt.Errorf("block %s: %w in %s", d, model.ErrNotFound, s.f.Name())
	}
	off := int64(0)
	if i >= 0 {
		off = HeaderSize + int64(i)*s.m.BlockSize
	}
	if _, err := s.f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("blocks: read %s: %w", s.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (s *FileSource) Close() error { return s.f.Close() }
