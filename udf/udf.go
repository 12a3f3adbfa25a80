// Package udf runs user functions compiled to WebAssembly (ABI version 1,
// docs/wasm.md) in a sandbox: wazero, pure Go, no cgo, in a sandbox
// process of its own (worker.go).
//
// A Host compiles a module once per digest (the sha256 of its bytes,
// lower-case hex) into a compilation cache shared by its sandbox
// processes, and instantiates it afresh for every request (Instantiate),
// so that no state survives from one request to the next. An instance
// gets:
//
//   - a process of its own: this program's executable started with an
//     empty environment, which serves the instance over two pipes; the
//     process is reused for a later instance of the same module only after
//     a request that ended cleanly;
//   - memory capped at Limits.MemoryPages pages of 64 KiB (the runtime's
//     WithMemoryLimitPages);
//   - no filesystem (no preopened directory: every path_open fails with
//     EBADF), no network (no socket import is allowed), no arguments, no
//     environment variables, an empty stdin;
//   - deterministic clocks (wazero's fake walltime and nanotime, which
//     start at fixed values and advance 1 ms per reading), a sleep that
//     returns at once and a seeded random source (ChaCha8, fixed seed):
//     the Go wasip1 runtime reads all three, and a replay must see the same;
//   - stdout and stderr kept in a buffer of MaxStderr bytes that an error
//     quotes (a Go panic prints there);
//   - a CPU cap: the caller's context deadline (WithTimeout), at which the
//     sandbox process is killed, even in an infinite loop.
//
// Validate checks a module at registration: the ABI's exports are present
// with their signatures and every import is one of AllowedImports.
//
// Errors that are the module's fault (a trap, an exit, the deadline, a
// memory overrun, a bad pointer or length, an error the module returned,
// its sandbox process dying) wrap ErrModule; a context cancelled by the
// caller is returned as ctx.Err().
package udf

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"
)

// ABIVersion is the version of the ABI this package implements
// (docs/wasm.md); a module says which it speaks with ExportVersion.
const ABIVersion = 1

// The exports of ABI version 1.
const (
	// ExportVersion is func() -> i32: the ABI version the module speaks.
	ExportVersion = "teatree_abi_version"
	// ExportAlloc is func(size i32) -> i32: a pointer to size bytes of the
	// module's memory, 8-byte aligned, that the host may write until the
	// next call of ExportProcess returns; 0 when it cannot.
	ExportAlloc = "teatree_alloc"
	// ExportProcess is func(in, in_len, params, params_len i32) -> i64:
	// process one input batch. See Instance.Process for the result.
	ExportProcess = "teatree_process"
	// ExportInitialize is WASI's reactor initialisation, called once per
	// instance when the module exports it (Go's -buildmode=c-shared does).
	ExportInitialize = "_initialize"
)

// errorFlag is the bit of ExportProcess's result that marks an error
// message instead of output.
const errorFlag = uint64(1) << 63

// MaxStderr is how many bytes of a module's stdout and stderr are kept for
// an error message.
const MaxStderr = 4096

// MaxErrorMessage is the longest error message of a module quoted in an
// error.
const MaxErrorMessage = 1024

// Defaults for Limits.
const (
	// DefaultMemoryPages is 4096 pages of 64 KiB: 256 MiB per instance.
	DefaultMemoryPages = 4096
	// DefaultTimeout is the CPU time one request may spend in a module.
	DefaultTimeout = 60 * time.Second
)

// ErrModule marks an error that is the module's fault.
var ErrModule = errors.New("module")

// AllowedImports are the only imports a module may have: functions of
// wasi_snapshot_preview1 that the Go wasip1 runtime and its os package
// import, in the deterministic, empty forms the package comment lists.
// Anything else (other file functions such as path_unlink_file or
// fd_readdir, sockets, another module's functions, memories, tables or
// globals) is refused.
var AllowedImports = []string{
	"args_get", "args_sizes_get", "clock_res_get", "clock_time_get", "environ_get", "environ_sizes_get",
	"fd_close", "fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get",
	"fd_read", "fd_seek", "fd_write", "path_open", "poll_oneoff", "proc_exit", "random_get", "sched_yield",
}

// Limits bound one instance.
type Limits struct {
	// MemoryPages caps the instance's memory in 64 KiB pages; 0 is
	// DefaultMemoryPages. At most 65536 (4 GiB).
	MemoryPages uint32
	// Timeout caps the time of one request in the module (instantiation
	// and every Process call); 0 is DefaultTimeout.
	Timeout time.Duration
}

func (l Limits) pages() uint32 {
	if l.MemoryPages == 0 {
		return DefaultMemoryPages
	}
	return min(l.MemoryPages, 65536)
}

// Timeout returns l.Timeout or DefaultTimeout.
func (l Limits) timeout() time.Duration {
	if l.Timeout <= 0 {
		return DefaultTimeout
	}
	return l.Timeout
}

// Digest returns the digest of a module: the sha256 of wasm, hex.
func Digest(wasm []byte) string {
	s := sha256.Sum256(wasm)
	return hex.EncodeToString(s[:])
}

// Info describes a validated module.
type Info struct {
	Digest  string   // Digest(wasm)
	Exports []string // exported function names, sorted
	Imports []string // imported functions as module.name, sorted
}

// maxIdle is the most sandbox processes a Host keeps between requests.
const maxIdle = 4

// Host compiles modules and runs them in sandbox processes. It is safe for
// concurrent use; Close it when done.
type Host struct {
	dir string
	// eng compiles and checks modules for Validate; no module runs in this
	// process.
	eng *engine

	mu     sync.Mutex
	idle   []*worker // most recently used last
	closed bool
}

// NewHost returns a Host whose compilation cache is kept in the
// directory cacheDir (created if missing), so that a module is compiled
// once per digest across restarts too; "" keeps it in memory only (each
// sandbox process then compiles on its own). Compiling is slow for large
// modules (a Go module of 14 MB takes tens of seconds on one core),
// running the compiled code fast.
func NewHost(cacheDir string) (*Host, error) {
	dir := cacheDir
	if dir != "" {
		dir = filepath.Join(cacheDir, cacheSubdir)
	}
	eng, err := newEngine(dir)
	if err != nil {
		return nil, err
	}
	return &Host{dir: dir, eng: eng}, nil
}

// Close kills the idle sandbox processes and closes the compilation
// cache.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	idle := h.idle
	h.idle, h.closed = nil, true
	h.mu.Unlock()
	for _, w := range idle {
		w.kill()
	}
	return h.eng.close(ctx)
}

// Compile compiles the module wasm of digest (Digest(wasm)) for lim's
// memory and checks it (see Validate), in a sandbox process that the next
// Instantiate of it takes. Call it before starting the CPU clock
// (WithTimeout): Instantiate compiles too, but the time it takes would
// count.
func (h *Host) Compile(ctx context.Context, digest string, wasm []byte, lim Limits) error {
	w, err := h.worker(ctx, compiledKey{lim.pages(), digest}, wasm)
	if err != nil {
		return err
	}
	h.release(w)
	return nil
}

// Validate compiles wasm (into the host's cache) and checks it against
// ABI version 1: the exports ExportVersion, ExportAlloc and ExportProcess
// with their signatures, an exported memory, and no import beyond
// AllowedImports. Errors wrap ErrModule and say what is wrong.
func (h *Host) Validate(ctx context.Context, wasm []byte) (Info, error) {
	d := Digest(wasm)
	c, err := h.eng.compile(ctx, DefaultMemoryPages, d, wasm)
	if err != nil {
		return Info{}, err
	}
	info := Info{Digest: d}
	for name := range c.ExportedFunctions() {
		info.Exports = append(info.Exports, name)
	}
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		info.Imports = append(info.Imports, mod+"."+name)
	}
	sort.Strings(info.Exports)
	info.Imports = slices.Compact(slices.Sorted(slices.Values(info.Imports)))
	return info, nil
}

// worker returns an idle sandbox process with key's module compiled, or
// starts one.
func (h *Host) worker(ctx context.Context, key compiledKey, wasm []byte) (*worker, error) {
	h.mu.Lock()
	for i := len(h.idle) - 1; i >= 0; i-- {
		if w := h.idle[i]; w.key == key {
			h.idle = slices.Delete(h.idle, i, i+1)
			h.mu.Unlock()
			if w.alive() {
				return w, nil
			}
			w.kill()
			h.mu.Lock()
			break
		}
	}
	h.mu.Unlock()
	return spawn(ctx, h.dir, key, wasm)
}

// release keeps w for a later request, the oldest idle process making
// room.
func (h *Host) release(w *worker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || !w.alive() {
		w.kill()
		return
	}
	h.idle = append(h.idle, w)
	if len(h.idle) > maxIdle {
		h.idle[0].kill()
		h.idle = slices.Delete(h.idle, 0, 1)
	}
}

// Instance is one instantiation of a module, for one request, in a
// sandbox process. It is not safe for concurrent use.
type Instance struct {
	h *Host
	w *worker // nil once closed
	// clean: no call failed, so the process may serve a later request.
	clean bool
	// Copied counts the bytes copied into and out of the module's memory
	// and through the pipes to and from its sandbox process (each byte
	// once per crossing).
	Copied int64
}

// Instantiate instantiates the module wasm of digest (Digest(wasm)) in a
// sandbox process, compiling it first unless an idle process has it
// compiled for lim's memory, runs its initialisation and checks its ABI
// version. ctx bounds the instantiation and Process's ctx each call: when
// one ends the process is killed, even in a loop; pass the context of
// WithTimeout. Close the instance when done.
func (h *Host) Instantiate(ctx context.Context, digest string, wasm []byte, lim Limits) (*Instance, error) {
	w, err := h.worker(ctx, compiledKey{lim.pages(), digest}, wasm)
	if err != nil {
		return nil, err
	}
	if _, err := w.call(ctx, "instantiate", opInstantiate); err != nil {
		w.kill()
		return nil, err
	}
	return &Instance{h: h, w: w, clean: true}, nil
}

// Close closes the instance; its sandbox process goes back to the host
// when every call succeeded, else it is killed.
func (i *Instance) Close(ctx context.Context) error {
	w := i.w
	if w == nil {
		return nil
	}
	i.w = nil
	if !i.clean || !w.alive() {
		w.kill()
		return nil
	}
	if _, err := w.call(context.WithoutCancel(ctx), "close", opClose); err != nil {
		w.kill()
		return err
	}
	i.h.release(w)
	return nil
}

// Process hands one input (an Arrow IPC stream, docs/wasm.md) and the
// params (JSON) to the module and returns a copy of its output (an Arrow
// IPC stream). The host writes in and params into buffers it asks the
// module for (ExportAlloc); the module returns an i64 whose low 32 bits
// are a pointer into its memory, bits 32-62 a length and bit 63 set when
// the bytes are an error message (UTF-8) rather than output. Errors: the
// module's error message, a trap, an exit, the deadline, an out-of-bounds
// pointer or its process dying wrap ErrModule; ctx.Err() when the
// caller's context is cancelled.
func (i *Instance) Process(ctx context.Context, in, params []byte) ([]byte, error) {
	if i.w == nil {
		return nil, errors.New("udf: Process on a closed instance")
	}
	if len(in) > 1<<31-1 || len(params) > 1<<31-1 {
		return nil, fmt.Errorf("%w: an input of %d bytes is too large for a 32-bit module", ErrModule, max(len(in), len(params)))
	}
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(in)))
	out, err := i.w.call(ctx, ExportProcess, opProcess, n[:], in, params)
	if err != nil {
		i.clean = false
		return nil, err
	}
	i.Copied += 2 * int64(len(in)+len(params)+len(out))
	return out, nil
}

// errDeadline is the cause WithTimeout gives its context: the module's
// CPU limit.
var errDeadline = errors.New("udf: time limit")

// WithTimeout returns ctx with lim's timeout: the context for Instantiate
// and Process. The caller's own cancellation stays distinguishable.
func WithTimeout(ctx context.Context, lim Limits) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, lim.timeout(), errDeadline)
}
