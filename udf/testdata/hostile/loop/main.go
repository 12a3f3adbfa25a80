// Command loop is a hostile module: teatree_process never returns. It
// uses no SDK, so that it is small and compiles fast.
package main

import "unsafe"

//go:wasmexport teatree_abi_version
func abiVersion() int32 { return 1 }

var buf = make([]byte, 1<<20)

// teatree_alloc hands out buf (inputs of the tests are smaller).
//
//go:wasmexport teatree_alloc
func alloc(size int32) int32 { return int32(uintptr(unsafe.Pointer(&buf[0]))) }

var n int

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	for {
		n++
	}
}

func main() { _ = buf }
