// Command wasifile is a hostile module: it imports WASI's
// path_unlink_file, a file function the sandbox does not grant.
package main

import "unsafe"

//go:wasmimport wasi_snapshot_preview1 path_unlink_file
func pathUnlinkFile(fd int32, path unsafe.Pointer, n int32) int32

//go:wasmexport teatree_abi_version
func abiVersion() int32 { return 1 }

//go:wasmexport teatree_alloc
func alloc(size int32) int32 { return 0 }

var name = []byte("/etc/passwd")

//go:wasmexport teatree_process
func process(in, inLen, params, paramsLen int32) int64 {
	return int64(pathUnlinkFile(3, unsafe.Pointer(&name[0]), int32(len(name))))
}

func main() {}
