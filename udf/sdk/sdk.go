// Package sdk is the Go SDK for teatree user functions in WebAssembly
// (ABI version 1, docs/wasm.md). A module is a main package that calls
// Map, Filter or FlatMap from an init function (or Handle for full
// control) and is built with the standard Go toolchain, Go 1.24 or later:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o f.wasm ./path/to/module
//
// The SDK exports the ABI's functions (teatree_abi_version,
// teatree_alloc, teatree_process) with //go:wasmexport, decodes each
// input batch from Arrow IPC (a lean codec for flat columns of the common
// types, whose arrays are views of the input's bytes; arrow-go's IPC
// reader and writer for the rest), calls the handler and encodes what it
// returns into a buffer reused across calls; an error or a panic of the handler goes back to the
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
// returns and the outputs after encoding them. The input's arrays are
// views of the module's input buffer, which the next call reuses: a
// handler that keeps data across calls copies it (Retain does not keep
// the bytes).
type Handler func(in arrow.RecordBatch, params json.RawMessage) ([]arrow.RecordBatch, error)

var handler Handler

// Handle sets the module's handler. Call it once, from init.
func Handle(h Handler) { handler = h }

// Mem is the allocator handlers should build their output with.
var Mem memory.Allocator = memory.NewGoAllocator()

// Run is what teatree_process does, without the pointers: it decodes in
// (an Arrow IPC stream), calls the handler for each batch and returns the
// output as an Arrow IPC stream of one schema. Tests call it natively.
// It reuses its buffers and the helpers' from call to call (scratch.go),
// so it is not safe for concurrent use, nor are the helpers while it
// runs.
func Run(in, params []byte) (out []byte, err error) { return run(nil, in, params) }

// enc is the lean encoder of the outputs, its buffers reused across calls.
var enc encoder

// run is Run appending the output to dst. The input's arrays are views
// of in (the lean codec, ipc.go) unless the stream needs arrow-go's
// reader; the output goes through arrow-go's writer only when a column
// needs it.
func run(dst, in, params []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	if handler == nil {
		return nil, errors.New("the module set no handler: call sdk.Handle, Map, Filter or FlatMap from init")
	}
	if len(params) == 0 {
		params = []byte("{}")
	}
	beginCall()
	defer endCall()
	_, recs, err := decodeStream(in)
	if errors.Is(err, errUnsupported) {
		return runArrow(in, params)
	}
	if err != nil {
		return nil, fmt.Errorf("read the input: %w", err)
	}
	defer release(recs)
	var outs []arrow.RecordBatch
	defer func() { release(outs) }()
	for _, rec := range recs {
		o, err := handler(rec, params)
		outs = append(outs, o...)
		if err != nil {
			return nil, err
		}
	}
	if len(outs) == 0 {
		// No output: an empty stream of the input's schema would be
		// wrong; the host takes an empty buffer as no batches.
		return nil, nil
	}
	out, err = enc.encodeStream(dst, outs[0].Schema(), outs)
	if errors.Is(err, errUnsupported) {
		return writeArrow(outs)
	}
	return out, err
}

// runArrow is run with arrow-go's IPC reader and writer, for the streams
// the lean codec leaves to it.
func runArrow(in, params []byte) ([]byte, error) {
	r, err := ipc.NewReader(bytes.NewReader(in), ipc.WithAllocator(Mem))
	if err != nil {
		return nil, fmt.Errorf("read the input: %w", err)
	}
	defer r.Release()
	var outs []arrow.RecordBatch
	defer func() { release(outs) }()
	for r.Next() {
		o, err := handler(r.RecordBatch(), params)
		outs = append(outs, o...)
		if err != nil {
			return nil, err
		}
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("read the input: %w", err)
	}
	if len(outs) == 0 {
		return nil, nil
	}
	return writeArrow(outs)
}

// writeArrow encodes outs with arrow-go's IPC writer.
func writeArrow(outs []arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(outs[0].Schema()), ipc.WithAllocator(Mem))
	for i, o := range outs {
		if err := w.Write(o); err != nil {
			return nil, fmt.Errorf("write output batch %d: %w", i, err)
		}
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
