package blocks

import (
	"fmt"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/model"
)

// How block objects are stored (Map.Encoding, Store.Encoding). The digest
// of a block is always the SHA-256 of its DuckDB bytes, so a file has one
// root whatever its blocks' encoding.
const (
	// EncodingRaw: the block's bytes at BlockKey (maps written before
	// blocks were compressed have no encoding and mean this).
	EncodingRaw = ""
	// EncodingZstd: one zstd frame (RFC 8878) of the block's bytes at
	// BlockKey + ".zst", written at klauspost/compress's SpeedFastest level.
	EncodingZstd = "zstd"
)

// zstdSuffix ends the key of a zstd-encoded block.
const zstdSuffix = ".zst"

// ObjectKey is the object key of block d of model m stored with encoding.
func ObjectKey(m string, d Digest, encoding string) string {
	if encoding == EncodingZstd {
		return BlockKey(m, d) + zstdSuffix
	}
	return BlockKey(m, d)
}

// ParseObjectKey returns the digest of a block object's key relative to
// its model's "models/<m>/blocks/" prefix, and false for a name that is
// not a block object of either encoding.
func ParseObjectKey(name string) (Digest, bool) {
	d, err := ParseDigest(strings.TrimSuffix(name, zstdSuffix))
	return d, err == nil
}

func checkEncoding(e string) error {
	if e != EncodingRaw && e != EncodingZstd {
		return fmt.Errorf("%w: block map: encoding %.20q: want %q or none (a newer teatree wrote it?)", model.ErrInvalid, e, EncodingZstd)
	}
	return nil
}

// maxEncoded bounds the size of the encoded object of a block of size
// bytes: zstd stores an incompressible block raw, adding a few bytes of
// frame and block headers (the bound of ZSTD_compressBound).
func maxEncoded(size int64) int64 { return size + size>>8 + 64 }

// The encoder and decoder are safe for concurrent EncodeAll/DecodeAll;
// the decoder refuses a frame that would decode past MaxBlockSize, so a
// hostile object cannot make a reader allocate without bound.
var (
	encoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	})
	decoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxBlockSize), zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic(err)
		}
		return d
	})
)

// encode returns the object bytes of block b stored with encoding.
func encode(b []byte, encoding string) []byte {
	if encoding == EncodingZstd {
		return encoder().EncodeAll(b, make([]byte, 0, len(b)/2))
	}
	return b
}

// decode fills buf with the block whose object bytes are obj; the caller
// checks the digest.
func decode(obj []byte, encoding string, buf []byte) error {
	if encoding != EncodingZstd {
		if len(obj) != len(buf) {
			return fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(obj), len(buf))
		}
		copy(buf, obj)
		return nil
	}
	out, err := decoder().DecodeAll(obj, buf[:0])
	if err != nil {
		return fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	if len(out) != len(buf) {
		return fmt.Errorf("%w: decodes to %d bytes, want %d", ErrCorrupt, len(out), len(buf))
	}
	if &out[0] != &buf[0] {
		copy(buf, out)
	}
	return nil
}
