package blocks_test

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/teatree/teatree/blocks"
)

func sampleMap() *blocks.Map {
	m := &blocks.Map{BlockSize: 262144, Header: sha256.Sum256([]byte("header"))}
	for i := 0; i < 3; i++ {
		m.Blocks = append(m.Blocks, sha256.Sum256([]byte{byte(i)}))
	}
	m.Blocks = append(m.Blocks, m.Blocks[0])
	return m
}

// FuzzParseMap: a block map comes from the object store when a reader
// pulls; no input may panic, and whatever is accepted encodes back to
// itself with the same root.
func FuzzParseMap(f *testing.F) {
	good, _ := sampleMap().MarshalJSON()
	empty, _ := (&blocks.Map{BlockSize: 16384}).MarshalJSON()
	f.Add(good)
	f.Add(empty)
	f.Add([]byte(`{"format":"teatree-blocks/1","block_size":262144,"bytes":12288,"root":"00","header":"00","blocks":[]}`))
	f.Add([]byte(`{"format":"teatree-blocks/1","block_size":3,"bytes":-1}`))
	f.Add([]byte(`{"format":"teatree-blocks/1","block_size":262144,"blocks":null,"extra":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := blocks.ParseMap(data)
		if err != nil {
			return
		}
		again, err := m.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := blocks.ParseMap(again)
		if err != nil {
			t.Fatalf("re-encoded map refused: %v\n%s", err, again)
		}
		if m2.Root() != m.Root() || m2.Size() != m.Size() || !cmp.Equal(m2.Blocks, m.Blocks, cmpopts.EquateEmpty()) {
			t.Fatalf("round trip changed the map")
		}
	})
}

// validHeader is a header area as DuckDB 1.5 writes it (storage version
// 64, 256 KiB blocks, iteration 1 in slot 1).
func validHeader() []byte {
	h := make([]byte, blocks.HeaderSize)
	copy(h[8:], "DUCK")
	binary.LittleEndian.PutUint64(h[12:], 64)
	copy(h[52:], "v1.5.6")
	le := binary.LittleEndian
	for slot, it := range []uint64{1, 0} {
		s := h[(slot+1)*blocks.SlotSize+8:]
		le.PutUint64(s[0:], it)
		le.PutUint64(s[24:], 4)
		le.PutUint64(s[32:], 262144)
		le.PutUint64(s[40:], 2048)
	}
	for slot := 0; slot < 3; slot++ {
		s := h[slot*blocks.SlotSize : (slot+1)*blocks.SlotSize]
		le.PutUint64(s, blocks.Checksum(s[8:]))
	}
	return h
}

// FuzzReadHeader: a local file handed to MapFile or OpenFile is outside
// input; no header may panic, and an accepted one has a valid block size.
func FuzzReadHeader(f *testing.F) {
	good := validHeader()
	if h, err := blocks.ReadHeader(good); err != nil || h.BlockSize != 262144 || h.Iteration != 1 || h.BlockCount != 4 || h.LibraryVersion != "v1.5.6" {
		f.Fatalf("sample header: %+v %v", h, err)
	}
	f.Add(good)
	f.Add(good[:100])
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := blocks.ReadHeader(data)
		if err != nil {
			return
		}
		if h.BlockSize < blocks.MinBlockSize || h.BlockSize > blocks.MaxBlockSize || h.BlockSize&(h.BlockSize-1) != 0 {
			t.Fatalf("accepted block size %d", h.BlockSize)
		}
	})
}
