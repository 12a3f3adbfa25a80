package blocks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/teatree/teatree/model"
)

// Format names the block-map encoding and root construction of this
// package; it is the first thing hashed into a root.
const Format = "teatree-blocks/1"

// PageBlocks is the number of block digests per page of the root's Merkle
// construction (see Map.Root).
const PageBlocks = 1024

// ScrubEvery (K) bounds how long Remap trusts DuckDB's stored checksums: an
// incremental map re-hashes, besides every block whose checksum changed, the
// blocks i with i mod K == generation mod K, so every block is hashed again
// at least once every K versions, at 1/K of the file per version (32 MiB of
// a 2 GiB file).
const ScrubEvery = 64

// maxBlocks bounds a decoded block map (4 TiB of 256 KiB blocks) so that a
// hostile manifest cannot make a reader allocate without bound.
const maxBlocks = 1 << 24

// Digest is a SHA-256 digest. It encodes in JSON as 64 lower-case hex
// digits.
type Digest [sha256.Size]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts exactly 64
// lower-case hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("%w: sha256 digest %.80q: want 64 hex digits, got %d characters", model.ErrInvalid, b, len(b))
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: sha256 digest %q: want lower-case hex digits", model.ErrInvalid, b)
		}
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// Map is the block map of a DuckDB file: the digest of its header area and
// of each of its blocks, in file order. Block i is the BlockSize bytes at
// HeaderSize + i*BlockSize. A Map is what a version's manifest records; its
// JSON form (MarshalJSON, ParseMap) carries the format, the block size, the
// file size, the digests and the root.
type Map struct {
	BlockSize int64    // bytes per block (DuckDB's block_alloc_size)
	Header    Digest   // SHA-256 of the first HeaderSize bytes
	Blocks    []Digest // SHA-256 of each whole block, checksum included
	// Encoding is how the blocks are stored (EncodingRaw, EncodingZstd);
	// Store.Upload sets it. It is not part of the root: the root names
	// the file's content.
	Encoding string

	// Writer-side state, not encoded: DuckDB's stored checksum of each
	// block (what Remap compares) and the number of incremental maps since
	// the last full one (what picks the blocks Remap scrubs).
	Checksums  []uint64
	Generation int
	// Info is the header of the mapped file (zero for a decoded Map).
	Info Header
}

// Size is the size of the file in bytes.
func (m *Map) Size() int64 { return HeaderSize + int64(len(m.Blocks))*m.BlockSize }

// Root is the root digest of the map, a two-level Merkle construction:
//
//	page_j = SHA-256(Blocks[1024j] || ... || Blocks[1024j+1023])   (the last page may be shorter)
//	root   = SHA-256("teatree-blocks/1" || 0x00 || be64(BlockSize) || be64(len(Blocks)) || Header || page_0 || page_1 || ...)
//
// Digests are the raw 32 bytes. The pages let a later manifest list a large
// map in content-addressed pages without changing the roots already recorded.
func (m *Map) Root() Digest {
	h := sha256.New()
	h.Write([]byte(Format))
	h.Write([]byte{0})
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], uint64(m.BlockSize))
	binary.BigEndian.PutUint64(n[8:], uint64(len(m.Blocks)))
	h.Write(n[:])
	h.Write(m.Header[:])
	for j := 0; j < len(m.Blocks); j += PageBlocks {
		page := sha256.New()
		for _, d := range m.Blocks[j:min(j+PageBlocks, len(m.Blocks))] {
			page.Write(d[:])
		}
		h.Write(page.Sum(nil))
	}
	return Digest(h.Sum(nil))
}

// Digests returns the set of distinct block digests of m (the header
// included): the objects a version references in the block store.
func (m *Map) Digests() map[Digest]struct{} {
	set := make(map[Digest]struct{}, len(m.Blocks)+1)
	set[m.Header] = struct{}{}
	for _, d := range m.Blocks {
		set[d] = struct{}{}
	}
	return set
}

// wireMap is the JSON form of a Map.
type wireMap struct {
	Format    string   `json:"format"`
	Encoding  string   `json:"encoding,omitempty"`
	BlockSize int64    `json:"block_size"`
	Bytes     int64    `json:"bytes"`
	Root      Digest   `json:"root"`
	Header    Digest   `json:"header"`
	Blocks    []Digest `json:"blocks"`
}

// MarshalJSON encodes m as {"format","encoding","block_size","bytes","root","header","blocks"}
// ("encoding" left out when raw, so raw maps read as before it existed).
func (m *Map) MarshalJSON() ([]byte, error) {
	blocks := m.Blocks
	if blocks == nil {
		blocks = []Digest{}
	}
	return json.Marshal(wireMap{Format: Format, Encoding: m.Encoding, BlockSize: m.BlockSize, Bytes: m.Size(), Root: m.Root(), Header: m.Header, Blocks: blocks})
}

// UnmarshalJSON decodes and checks a block map; see ParseMap.
func (m *Map) UnmarshalJSON(data []byte) error {
	var w wireMap
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: block map: %v", model.ErrInvalid, err)
	}
	switch {
	case w.Format != Format:
		return fmt.Errorf("%w: block map format %.40q: want %q (a newer teatree wrote it?)", model.ErrInvalid, w.Format, Format)
	case w.BlockSize < MinBlockSize || w.BlockSize > MaxBlockSize || w.BlockSize&(w.BlockSize-1) != 0:
		return fmt.Errorf("%w: block map: block_size %d must be a power of two from %d to %d", model.ErrInvalid, w.BlockSize, MinBlockSize, MaxBlockSize)
	case len(w.Blocks) > maxBlocks:
		return fmt.Errorf("%w: block map: %d blocks, at most %d are supported", model.ErrInvalid, len(w.Blocks), maxBlocks)
	}
	if err := checkEncoding(w.Encoding); err != nil {
		return err
	}
	d := Map{BlockSize: w.BlockSize, Header: w.Header, Blocks: w.Blocks, Encoding: w.Encoding}
	if d.Size() != w.Bytes {
		return fmt.Errorf("%w: block map: bytes %d, but %d blocks of %d bytes after the header make %d", model.ErrInvalid, w.Bytes, len(w.Blocks), w.BlockSize, d.Size())
	}
	if root := d.Root(); root != w.Root {
		return fmt.Errorf("block map: %w: root %s, its blocks make %s", ErrCorrupt, w.Root, root)
	}
	*m = d
	return nil
}

// ParseMap decodes the JSON form of a block map, outside input when a
// reader pulls a version. It returns an error wrapping model.ErrInvalid for
// malformed JSON, an unknown format, a bad block size or byte count, and
// ErrCorrupt when the root does not match the digests.
func ParseMap(data []byte) (*Map, error) {
	var m Map
	if err := m.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return &m, nil
}

// MapStats says what mapping a file cost.
type MapStats struct {
	Full     bool          // every block was hashed
	Blocks   int           // blocks in the file
	Hashed   int           // blocks read and hashed
	Changed  int           // blocks whose digest differs from the previous map's at the same index, or new
	Scrubbed int           // blocks hashed only because of the scrub
	Mismatch int           // scrubbed blocks whose content changed under an unchanged checksum
	Duration time.Duration // wall time
}

// MapFile hashes every block of the DuckDB file at path. The file must be
// checkpointed (no write-ahead log) and must not change while it is read:
// the caller holds off transactions and checkpoints. It returns an error
// wrapping model.ErrInvalid when the file is not an unencrypted DuckDB file
// of a known storage version, has a WAL, is not whole blocks, or has a block
// that is neither all zeros (a hole DuckDB trimmed) nor valid under its
// stored checksum (a torn or concurrent write).
func MapFile(ctx context.Context, path string) (*Map, MapStats, error) {
	return Remap(ctx, path, nil)
}

// Remap maps the DuckDB file at path incrementally from prev, the map of an
// earlier state of the same file: it reads the 8-byte stored checksum of
// every block and hashes only the blocks that are new, whose checksum
// differs from prev's, or that the scrub picks (see ScrubEvery). A nil prev,
// one made by ParseMap (no checksums) or one with another block size means
// a full map. The conditions and errors are MapFile's.
//
// A block whose checksum did not change is trusted to be unchanged between
// scrubs because DuckDB writes a block only as a whole, at a checkpoint,
// with a fresh checksum over its content, and never into a block that is
// in use; see doc.go for the residual risk.
//
// Remap opens and closes the file, which releases every POSIX lock this
// process holds on it: DuckDB's own lock, if this process has the file
// open in DuckDB. Map such a file with RemapFile.
func Remap(ctx context.Context, path string, prev *Map) (*Map, MapStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, MapStats{}, fmt.Errorf("blocks: %w", err)
	}
	defer f.Close()
	return remap(ctx, f, path, prev, nil)
}

// RemapFile is Remap of an open file that it leaves open: the way to map a
// DuckDB file this process has open in DuckDB, with a descriptor kept open
// until DuckDB has closed the file (closing it earlier releases DuckDB's
// fcntl lock, see doc.go).
func RemapFile(ctx context.Context, f *os.File, prev *Map) (*Map, MapStats, error) {
	return remap(ctx, f, f.Name(), prev, nil)
}

// remap maps f, checking walOf for a write-ahead log (the live file when
// f is a clone of it), and calls keep with every block it hashed whose
// digest prev does not have (i == -1 for the header); b is reused after
// keep returns.
func remap(ctx context.Context, f *os.File, walOf string, prev *Map, keep func(i int, d Digest, b []byte) error) (*Map, MapStats, error) {
	start := time.Now()
	if err := checkWAL(walOf); err != nil {
		return nil, MapStats{}, err
	}
	h, hdr, size, err := fileLayout(f)
	if err != nil {
		return nil, MapStats{}, err
	}
	n := int((size - HeaderSize) / h.BlockSize)
	full := prev == nil || prev.BlockSize != h.BlockSize || len(prev.Checksums) != len(prev.Blocks)
	m := &Map{BlockSize: h.BlockSize, Header: sha256.Sum256(hdr), Blocks: make([]Digest, n), Checksums: make([]uint64, n), Info: h}
	if !full {
		m.Generation = prev.Generation + 1
	}
	st := MapStats{Full: full, Blocks: n}
	var had map[Digest]struct{}
	if prev != nil {
		had = prev.Digests()
	}
	if _, ok := had[m.Header]; !ok && keep != nil {
		if err := keep(-1, m.Header, hdr); err != nil {
			return nil, st, err
		}
	}
	buf := make([]byte, h.BlockSize)
	var cs [checksumSize]byte
	for i := 0; i < n; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, st, ctx.Err()
		}
		off := HeaderSize + int64(i)*h.BlockSize
		old := !full && i < len(prev.Blocks)
		if old {
			if _, err := f.ReadAt(cs[:], off); err != nil {
				return nil, st, fmt.Errorf("blocks: read %s: %w", f.Name(), err)
			}
			c := binary.LittleEndian.Uint64(cs[:])
			scrub := i%ScrubEvery == m.Generation%ScrubEvery
			if c == prev.Checksums[i] && !scrub {
				m.Blocks[i], m.Checksums[i] = prev.Blocks[i], c
				continue
			}
			if c == prev.Checksums[i] {
				st.Scrubbed++
			}
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, st, fmt.Errorf("blocks: read %s: %w", f.Name(), err)
		}
		if err := checkBlock(buf); err != nil {
			return nil, st, fmt.Errorf("%w: %s: block %d at offset %d: %v", model.ErrInvalid, f.Name(), i, off, err)
		}
		st.Hashed++
		m.Blocks[i], m.Checksums[i] = sha256.Sum256(buf), binary.LittleEndian.Uint64(buf)
		if prev == nil || i >= len(prev.Blocks) || m.Blocks[i] != prev.Blocks[i] {
			st.Changed++
			if old && m.Checksums[i] == prev.Checksums[i] {
				st.Mismatch++
			}
		}
		if _, ok := had[m.Blocks[i]]; !ok && keep != nil {
			if err := keep(i, m.Blocks[i], buf); err != nil {
				return nil, st, err
			}
		}
	}
	st.Duration = time.Since(start)
	return m, st, nil
}

// checkBlock accepts an all-zero block (free space DuckDB trimmed, or never
// wrote) and a block whose stored checksum matches its content.
func checkBlock(b []byte) error {
	stored := binary.LittleEndian.Uint64(b)
	if computed := Checksum(b[checksumSize:]); stored != computed {
		if stored == 0 && allZero(b) {
			return nil
		}
		return fmt.Errorf("stored checksum %d, content %d: the file is corrupt or being written", stored, computed)
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
