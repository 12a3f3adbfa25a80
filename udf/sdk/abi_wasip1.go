//go:build wasip1

package sdk

import (
	"runtime"
	"runtime/metrics"
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
)

// gcBytes is how many bytes the calls since the last collection may
// allocate before a call ends with one. A collection costs a few ms on
// the module's one thread (it marks the live heap: arrow-go's tables, the
// reused buffers), whatever the garbage; a batch of 2048 rows through
// the helpers leaves tens of KB of it (the arrays' headers), one that
// allocates its columns about 100 KB. 8 MiB keeps the heap within the
// default cap many times over and pays a collection once per 80 such
// batches or more.
const gcBytes = 8 << 20

// allocs reads the bytes allocated so far; allocsAtGC is its value after
// the last collection.
var (
	allocs     = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocsAtGC uint64
)

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
	// background collector may never finish a cycle: collect here once
	// the calls have allocated gcBytes, where the live heap is the
	// buffers above and the output.
	if metrics.Read(allocs); allocs[0].Value.Uint64()-allocsAtGC >= gcBytes {
		runtime.GC()
		metrics.Read(allocs)
		allocsAtGC = allocs[0].Value.Uint64()
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
