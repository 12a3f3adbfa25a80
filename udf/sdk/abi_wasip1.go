//go:build wasip1

package sdk

import "unsafe"

// The ABI's exports (docs/wasm.md).

// pinned holds the buffers teatree_alloc handed out until the next
// teatree_process has read them; out holds the last output (or error)
// until the next call.
var (
	pinned [][]uint64
	out    []byte
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
	b := make([]uint64, (int(size)+7)/8+1)
	pinned = append(pinned, b)
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	res, err := Run(view(in, inLen), view(params, paramsLen))
	pinned = pinned[:0]
	if err != nil {
		out = []byte(err.Error())
		return int64(pack(out) | 1<<63)
	}
	out = res
	return int64(pack(out))
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
