// Package sdk is the Go SDK for teatree user functions in WebAssembly
// (ABI version 1, docs/wasm.md). A module is a main package that calls
// Map, Filter or FlatMap from an init function (or Handle for full
// control) and is built with the standard Go toolchain, Go 1.24 or later:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o f.wasm ./path/to/module
//
// The SDK exports the ABI's functions (teatree_abi_version,
// teatree_alloc, teatree_process) with //go:wasmexport, decodes each
// input batch from Arrow IPC with arrow-go, calls the handler and encodes
// what it returns; an error or a panic of the handler goes back to the
// host as the request's error. udf/examples holds three modules.
//
// A handler must be deterministic: the same batch and params give the
// same output (the sandbox's clocks and random source are fixed, so Go's
// own runtime is). Off wasip1 the package builds too, so that handlers
// can be tested natively with Run.
package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Handler processes one input batch with the call's params (the args'
// params object, raw JSON; "{}" when absent) and returns the output
// batches, all of one schema (the first batch's, or the last call's).
// It may return none. The SDK releases the input after the handler
// returns and the outputs after encoding them.
type Handler func(in arrow.RecordBatch, params json.RawMessage) ([]arrow.RecordBatch, error)

var handler Handler

// Handle sets the module's handler. Call it once, from init.
func Handle(h Handler) { handler = h }

// Mem is the allocator handlers should build their output with.
var Mem memory.Allocator = memory.NewGoAllocator()

// Run is what teatree_process does, without the pointers: it decodes in
// (an Arrow IPC stream), calls the handler for each batch and returns the
// output as an Arrow IPC stream of one schema. Tests call it natively.
func Run(in, params []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if handler == nil {
		return nil, errors.New("the module set no handler: call sdk.Handle, Map, Filter or FlatMap from init")
	}
	if len(params) == 0 {
		params = []byte("{}")
	}
	r, err := ipc.NewReader(bytes.NewReader(in), ipc.WithAllocator(Mem))
	if err != nil {
		return nil, fmt.Errorf("read the input: %w", err)
	}
	defer r.Release()
	var buf bytes.Buffer
	var w *ipc.Writer
	for r.Next() {
		rec := r.RecordBatch()
		outs, err := handler(rec, params)
		if err != nil {
			release(outs)
			return nil, err
		}
		for i, o := range outs {
			if w == nil {
				w = ipc.NewWriter(&buf, ipc.WithSchema(o.Schema()), ipc.WithAllocator(Mem))
			}
			if err := w.Write(o); err != nil {
				release(outs)
				return nil, fmt.Errorf("write output batch %d: %w", i, err)
			}
		}
		release(outs)
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("read the input: %w", err)
	}
	if w == nil {
		// No output: an empty stream of the input's schema would be
		// wrong; the host takes an empty buffer as no batches.
		return nil, nil
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("write the output: %w", err)
	}
	return buf.Bytes(), nil
}

func release(rs []arrow.RecordBatch) {
	for _, r := range rs {
		if r != nil {
			r.Release()
		}
	}
}
