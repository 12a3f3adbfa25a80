package blocks

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/teatree/teatree/model"
)

// The file layout of DuckDB 1.5 (see doc.go for the source lines).
const (
	// SlotSize is the size of one header slot (Storage::FILE_HEADER_SIZE).
	SlotSize = 4096
	// HeaderSize is the header area: the main header and the two database
	// headers (SingleFileBlockManager::BLOCK_START = 3 * FILE_HEADER_SIZE).
	HeaderSize = 3 * SlotSize
	// DefaultBlockSize is DuckDB's default block allocation size
	// (DEFAULT_BLOCK_ALLOC_SIZE), used when a header stores 0.
	DefaultBlockSize = 262144
	// MinBlockSize and MaxBlockSize bound the block allocation size
	// (Storage::MIN_BLOCK_ALLOC_SIZE, Storage::MAX_BLOCK_ALLOC_SIZE).
	MinBlockSize = 16384
	MaxBlockSize = 262144
	// checksumSize is the stored checksum in front of every block and
	// header slot of an unencrypted file (DEFAULT_BLOCK_HEADER_STORAGE_SIZE).
	checksumSize = 8
	// Storage version numbers (MainHeader::version_number) whose layout this
	// package was checked against: VERSION_NUMBER_LOWER..VERSION_NUMBER_UPPER
	// of DuckDB 1.5 (64 = v0.9.0 to v1.1.3, 65 = v1.2, 66 = v1.3, 67 = v1.4,
	// 68 = v1.5).
	minVersionNumber = 64
	maxVersionNumber = 68
	encryptedFlag    = 1 // MainHeader::ENCRYPTED_DATABASE_FLAG in flags[0]
)

var magic = []byte("DUCK")

// Header is what this package reads from the header area of a DuckDB file.
type Header struct {
	VersionNumber  uint64 // storage version number of the main header (64..68)
	LibraryVersion string // DuckDB version that created the file, e.g. "v1.5.6"
	// Of the active database header (the one with the higher iteration):
	Iteration  uint64 // checkpoints so far
	BlockCount uint64 // blocks at the checkpoint, before trailing free ones were truncated
	BlockSize  int64  // block_alloc_size in bytes
	// SerializationCompatibility is the storage version the catalog is
	// serialized with (1 = v0.10.0, 7 = v1.5), the one that decides which
	// DuckDB versions can open the file.
	SerializationCompatibility uint64
}

// ReadHeader parses and checks the header area of a DuckDB file (the
// first HeaderSize bytes). It returns an error wrapping model.ErrInvalid if
// the bytes are not the header of an unencrypted DuckDB 0.9-1.5 file with a
// valid checksum in each of the three slots.
func ReadHeader(hdr []byte) (Header, error) {
	if len(hdr) < HeaderSize {
		return Header{}, fmt.Errorf("%w: not a DuckDB database file: %d bytes, shorter than the %d-byte header", model.ErrInvalid, len(hdr), HeaderSize)
	}
	if !bytes.Equal(hdr[checksumSize:checksumSize+4], magic) {
		return Header{}, fmt.Errorf("%w: not a DuckDB database file: no DUCK magic bytes at offset 8", model.ErrInvalid)
	}
	le := binary.LittleEndian
	for slot := 0; slot < 3; slot++ {
		s := hdr[slot*SlotSize : (slot+1)*SlotSize]
		if stored, computed := le.Uint64(s), Checksum(s[checksumSize:]); stored != computed {
			return Header{}, fmt.Errorf("%w: corrupt DuckDB header: slot %d has checksum %d, its content %d", model.ErrInvalid, slot, stored, computed)
		}
	}
	main := hdr[checksumSize+4:]
	h := Header{VersionNumber: le.Uint64(main)}
	if h.VersionNumber < minVersionNumber || h.VersionNumber > maxVersionNumber {
		return Header{}, fmt.Errorf("%w: DuckDB storage version number %d: only %d to %d (DuckDB 0.9 to 1.5) are known", model.ErrInvalid, h.VersionNumber, minVersionNumber, maxVersionNumber)
	}
	if flags0 := le.Uint64(main[8:]); flags0&encryptedFlag != 0 {
		return Header{}, fmt.Errorf("%w: the DuckDB file is encrypted: encrypted files have 40-byte block headers and are not supported", model.ErrInvalid)
	}
	h.LibraryVersion = string(bytes.TrimRight(main[40:72], "\x00"))
	// The database header with the higher iteration is the active one
	// (SingleFileBlockManager::LoadExistingDatabase).
	db := func(slot int) []byte { return hdr[slot*SlotSize+checksumSize:] }
	active := db(1)
	if le.Uint64(db(2)) >= le.Uint64(db(1)) {
		active = db(2)
	}
	h.Iteration = le.Uint64(active[0:])
	h.BlockCount = le.Uint64(active[24:])
	bs := le.Uint64(active[32:])
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return Header{}, fmt.Errorf("%w: DuckDB block size %d: must be a power of two from %d to %d", model.ErrInvalid, bs, MinBlockSize, MaxBlockSize)
	}
	h.BlockSize = int64(bs)
	if h.VersionNumber > 64 {
		h.SerializationCompatibility = le.Uint64(active[48:])
	} else {
		h.SerializationCompatibility = 1
	}
	return h, nil
}

// Checksum is DuckDB's block checksum (src/common/checksum.cpp): 5381 xor
// the product of every little-endian 8-byte word with 0xbf58476d1ce4e5b9,
// and a MurmurHash-style hash of the 0-7 bytes left over. It is what DuckDB
// stores in the first 8 bytes of a block, computed over the rest.
func Checksum(p []byte) uint64 {
	const mul = 0xbf58476d1ce4e5b9
	result := uint64(5381)
	n := len(p) / 8
	for i := 0; i < n; i++ {
		result ^= binary.LittleEndian.Uint64(p[8*i:]) * mul
	}
	if rest := p[8*n:]; len(rest) > 0 {
		result ^= checksumRemainder(rest)
	}
	return result
}

// checksumRemainder is DuckDB's ChecksumRemainder for fewer than 8 bytes
// (robin-hood-hashing's hash_bytes, MIT licence, Martin Ankerl).
func checksumRemainder(p []byte) uint64 {
	const m = 0xc6a4a7935bd1e995
	const seed = 0xe17a1465
	const r = 47
	h := uint64(seed) ^ (uint64(len(p)) * m)
	var k uint64
	for i := len(p) - 1; i >= 0; i-- {
		k = k<<8 | uint64(p[i])
	}
	h ^= k
	h *= m
	h ^= h >> r
	h *= m
	h ^= h >> r
	return h
}

// checkWAL refuses a DuckDB file with a non-empty write-ahead log: its
// blocks are not the whole state until a CHECKPOINT.
func checkWAL(path string) error {
	if st, err := os.Stat(path + ".wal"); err == nil && st.Size() > 0 {
		return fmt.Errorf("%w: %s has a write-ahead log (%s, %d bytes): CHECKPOINT the database first, between transactions", model.ErrInvalid, path, path+".wal", st.Size())
	}
	return nil
}

// fileLayout reads and checks the layout of the open DuckDB file f: it
// must have a valid header and a size of HeaderSize plus whole blocks.
func fileLayout(f *os.File) (Header, []byte, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return Header{}, nil, 0, fmt.Errorf("blocks: %w", err)
	}
	hdr := make([]byte, HeaderSize)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, HeaderSize), hdr); err != nil {
		return Header{}, nil, 0, fmt.Errorf("%w: %s is not a DuckDB database file: %d bytes, shorter than the %d-byte header", model.ErrInvalid, f.Name(), st.Size(), HeaderSize)
	}
	h, err := ReadHeader(hdr)
	if err != nil {
		return Header{}, nil, 0, fmt.Errorf("%s: %w", f.Name(), err)
	}
	// The header's block count is no lower bound: a checkpoint writes the
	// header, then truncates the free blocks at the end of the file.
	size := st.Size()
	if (size-HeaderSize)%h.BlockSize != 0 {
		return Header{}, nil, 0, fmt.Errorf("%w: %s: %d bytes is not the %d-byte header plus whole %d-byte blocks: the file is truncated or being written", model.ErrInvalid, f.Name(), size, HeaderSize, h.BlockSize)
	}
	return h, hdr, size, nil
}
