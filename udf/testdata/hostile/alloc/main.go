// Command alloc is a hostile module: teatree_process allocates without
// end. It uses no SDK, so that it is small and compiles fast.
package main

import "unsafe"

//go:wasmexport teatree_abi_version
func abiVersion() int32 { return 1 }

var buf = make([]byte, 1<<20)

// teatree_alloc hands out buf (inputs of the tests are smaller).
//
//go:wasmexport teatree_alloc
func alloc(size int32) int32 { return int32(uintptr(unsafe.Pointer(&buf[0]))) }

var hold [][]byte

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	for {
		b := make([]byte, 64<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		hold = append(hold, b)
	}
}

func main() { _ = buf }
