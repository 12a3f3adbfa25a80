// Command oob is a hostile module: teatree_process returns a pointer and
// length outside its memory, teatree_alloc a pointer beyond it when asked
// for exactly 7 bytes.
package main

//go:wasmexport teatree_abi_version
func abiVersion() int32 { return 1 }

var buf = make([]byte, 1<<20)

//go:wasmexport teatree_alloc
func alloc(size int32) int32 {
	if size == 7 {
		return -16
	}
	return 1 << 20
}

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	return int64(0x7fff0000) | int64(1<<30)<<32
}

func main() { _ = buf }
