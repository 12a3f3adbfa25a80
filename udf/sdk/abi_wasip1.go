//go:build wasip1

package sdk

import (
	"runtime"
	"unsafe"
)

// The ABI's exports (docs/wasm.md).

// pinned holds the buffers teatree_alloc handed out until the next
// teatree_process has read them, free those it may hand out again; last
// holds the last output (or error) until the next call; out is the
// buffer the lean encoder writes into, reused by the next call (the host
// has copied the output by then).
var (
	pinned, free [][]uint64
	out, last    []byte
	calls        int
)

// gcEvery is how many calls go between collections: a batch of 2048 rows
// leaves about 1 MB of garbage, so 16 calls keep the heap within tens of
// MB while a collection (a few ms: the heap holds arrow-go's tables) is
// paid once per 32 K rows.
const gcEvery = 16

//go:wasmexport teatree_abi_version
func abiVersion() int32 { return 1 }

// teatree_alloc returns size bytes, 8-byte aligned (a []uint64).
//
//go:wasmexport teatree_alloc
func alloc(size int32) int32 {
	if size < 0 {
		return 0
	}
	words := (int(size)+7)/8 + 1
	var b []uint64
	for i, f := range free {
		if len(f) >= words {
			b = f
			free = append(free[:i], free[i+1:]...)
			break
		}
	}
	if b == nil {
		b = make([]uint64, words)
	}
	pinned = append(pinned, b)
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	res, err := run(out[:0], view(in, inLen), view(params, paramsLen))
	// The input buffers go back to the free list: the next call's input
	// is about as large, so a request allocates them once.
	free = append(free, pinned...)
	clear(pinned)
	pinned = pinned[:0]
	if len(free) > 4 {
		clear(free[4:])
		free = free[:4]
	}
	// Goroutines do not run between calls of a reactor, so Go's
	// background collector may never finish a cycle: collect here every
	// gcEvery calls, where the live heap is the buffers above and the
	// output.
	if calls++; calls%gcEvery == 0 {
		runtime.GC()
	}
	if err != nil {
		last = []byte(err.Error())
		return int64(pack(last) | 1<<63)
	}
	if cap(res) >= cap(out) {
		out = res
	}
	last = res
	return int64(pack(last))
}

func view(p, n int32) []byte {
	if n <= 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(p))), n)
}

func pack(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) | uint64(len(b))<<32
}
