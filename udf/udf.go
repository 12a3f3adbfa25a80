// Package udf runs user functions compiled to WebAssembly (ABI version 1,
// docs/wasm.md) in a sandbox: wazero, pure Go, no cgo.
//
// A Host compiles a module once per digest (the sha256 of its bytes,
// lower-case hex) into a compilation cache shared by its runtimes, and
// instantiates it afresh for every call (Instantiate), so that no state
// survives from one request to the next. An instance gets:
//
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
//   - a CPU cap: the caller's context deadline, which closes the instance
//     (WithCloseOnContextDone), even in an infinite loop.
//
// Validate checks a module at registration: the ABI's exports are present
// with their signatures and every import is one of AllowedImports.
//
// Errors that are the module's fault (a trap, an exit, the deadline, a
// memory overrun, a bad pointer or length, an error the module returned)
// wrap ErrModule; a context cancelled by the caller is returned as
// ctx.Err().
package udf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
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

// Host compiles and runs modules. It is safe for concurrent use; Close it
// when done.
type Host struct {
	cache wazero.CompilationCache
	// unchecked compiles without WithCloseOnContextDone: no CPU-time
	// limit (tests only, export_test.go: what the check costs).
	unchecked bool

	mu       sync.Mutex
	runtimes map[uint32]wazero.Runtime // by memory pages
	compiled map[compiledKey]wazero.CompiledModule
}

type compiledKey struct {
	pages  uint32
	digest string
}

// NewHost returns a Host whose compilation cache is kept in the
// directory cacheDir (created if missing), so that a module is compiled
// once per digest across restarts too; "" keeps it in memory only.
// Compiling is slow for large modules (a Go module of 14 MB takes tens
// of seconds on one core), running the compiled code fast.
func NewHost(cacheDir string) (*Host, error) {
	var cache wazero.CompilationCache
	if cacheDir == "" {
		cache = wazero.NewCompilationCache()
	} else {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(cacheDir); err != nil {
			return nil, fmt.Errorf("udf: compilation cache: %w", err)
		}
	}
	return &Host{
		cache:    cache,
		runtimes: map[uint32]wazero.Runtime{},
		compiled: map[compiledKey]wazero.CompiledModule{},
	}, nil
}

// Close closes the runtimes and the compilation cache.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, r := range h.runtimes {
		errs = append(errs, r.Close(ctx))
	}
	h.runtimes, h.compiled = map[uint32]wazero.Runtime{}, map[compiledKey]wazero.CompiledModule{}
	errs = append(errs, h.cache.Close(ctx))
	return errors.Join(errs...)
}

// runtime returns the runtime for pages, with WASI instantiated.
func (h *Host) runtime(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	if r, ok := h.runtimes[pages]; ok {
		return r, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(!h.unchecked)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("udf: instantiate wasi: %w", err)
	}
	h.runtimes[pages] = r
	return r, nil
}

// Compile compiles the module wasm of digest (Digest(wasm)) for lim's
// memory unless the host has it already, and checks it (see Validate).
// Call it before starting the CPU clock (WithTimeout): Instantiate
// compiles too, but the time it takes would count.
func (h *Host) Compile(ctx context.Context, digest string, wasm []byte, lim Limits) error {
	_, err := h.compile(ctx, lim.pages(), digest, wasm)
	return err
}

// compile returns wasm compiled for a runtime of pages, checked with
// check. wasm must have the given digest.
func (h *Host) compile(ctx context.Context, pages uint32, digest string, wasm []byte) (wazero.CompiledModule, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := compiledKey{pages, digest}
	if c, ok := h.compiled[k]; ok {
		return c, nil
	}
	r, err := h.runtime(ctx, pages)
	if err != nil {
		return nil, err
	}
	c, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: not a valid WebAssembly module: %v", ErrModule, err)
	}
	if err := check(c); err != nil {
		c.Close(ctx)
		return nil, err
	}
	h.compiled[k] = c
	return c, nil
}

// Validate compiles wasm (into the host's cache) and checks it against
// ABI version 1: the exports ExportVersion, ExportAlloc and ExportProcess
// with their signatures, an exported memory, and no import beyond
// AllowedImports. Errors wrap ErrModule and say what is wrong.
func (h *Host) Validate(ctx context.Context, wasm []byte) (Info, error) {
	d := Digest(wasm)
	c, err := h.compile(ctx, DefaultMemoryPages, d, wasm)
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

// check checks a compiled module against the ABI.
func check(c wazero.CompiledModule) error {
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod != wasi_snapshot_preview1.ModuleName || !slices.Contains(AllowedImports, name) {
			return fmt.Errorf("%w: it imports %s.%s, which the sandbox does not grant (allowed: %s.{%s})", ErrModule, mod, name, wasi_snapshot_preview1.ModuleName, strings.Join(AllowedImports, ","))
		}
	}
	if n := len(c.ImportedMemories()); n > 0 {
		return fmt.Errorf("%w: it imports a memory: a module must define and export its own", ErrModule)
	}
	if len(c.ExportedMemories()) == 0 {
		return fmt.Errorf("%w: it exports no memory", ErrModule)
	}
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	want := []struct {
		name        string
		params, res []api.ValueType
	}{
		{ExportVersion, nil, []api.ValueType{i32}},
		{ExportAlloc, []api.ValueType{i32}, []api.ValueType{i32}},
		{ExportProcess, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i64}},
	}
	exports := c.ExportedFunctions()
	for _, w := range want {
		f, ok := exports[w.name]
		if !ok {
			return fmt.Errorf("%w: it does not export %s, which ABI version %d requires (docs/wasm.md; the SDK udf/sdk exports it)", ErrModule, w.name, ABIVersion)
		}
		if !slices.Equal(f.ParamTypes(), w.params) || !slices.Equal(f.ResultTypes(), w.res) {
			return fmt.Errorf("%w: its export %s has the signature %s, not %s", ErrModule, w.name, sig(f.ParamTypes(), f.ResultTypes()), sig(w.params, w.res))
		}
	}
	if f, ok := exports[ExportInitialize]; ok && (len(f.ParamTypes()) > 0 || len(f.ResultTypes()) > 0) {
		return fmt.Errorf("%w: its export %s takes or returns values", ErrModule, ExportInitialize)
	}
	return nil
}

func sig(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	return "(" + names(params) + ") -> (" + names(results) + ")"
}

// Instance is one instantiation of a module, for one request. It is not
// safe for concurrent use.
type Instance struct {
	mod     api.Module
	alloc   api.Function
	process api.Function
	stderr  *boundedBuffer
	// Copied counts the bytes copied into and out of the module's memory.
	Copied int64
}

// Instantiate instantiates the module wasm of digest (Digest(wasm)), compiling
// it first unless the host has it compiled for lim's memory, runs its
// initialisation and checks its ABI version. ctx bounds the instance's
// life: when it ends the instance is closed, even in a loop; pass one with
// the deadline of lim (WithTimeout). Close the instance when done.
func (h *Host) Instantiate(ctx context.Context, digest string, wasm []byte, lim Limits) (*Instance, error) {
	pages := lim.pages()
	c, err := h.compile(ctx, pages, digest, wasm)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	r := h.runtimes[pages]
	h.mu.Unlock()
	stderr := &boundedBuffer{max: MaxStderr}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: instances of one module may run at once
		WithStartFunctions().
		WithStdout(stderr).
		WithStderr(stderr).
		WithStdin(bytes.NewReader(nil)).
		WithRandSource(rand.NewChaCha8([32]byte{'t', 'e', 'a', 't', 'r', 'e', 'e'})).
		WithWalltime(fakeWalltime(), 1).
		WithNanotime(fakeNanotime(), 1).
		WithNanosleep(func(int64) {}).
		WithOsyield(func() {})
	mod, err := r.InstantiateModule(ctx, c, cfg)
	if err != nil {
		return nil, instanceError(ctx, "instantiate", err, stderr)
	}
	i := &Instance{mod: mod, alloc: mod.ExportedFunction(ExportAlloc), process: mod.ExportedFunction(ExportProcess), stderr: stderr}
	if init := mod.ExportedFunction(ExportInitialize); init != nil {
		if _, err := init.Call(ctx); err != nil {
			mod.Close(ctx)
			return nil, instanceError(ctx, ExportInitialize, err, stderr)
		}
	}
	v, err := mod.ExportedFunction(ExportVersion).Call(ctx)
	if err != nil {
		mod.Close(ctx)
		return nil, instanceError(ctx, ExportVersion, err, stderr)
	}
	if int32(v[0]) != ABIVersion {
		mod.Close(ctx)
		return nil, fmt.Errorf("%w: it speaks ABI version %d; this db-manager speaks %d", ErrModule, int32(v[0]), ABIVersion)
	}
	return i, nil
}

// fakeWalltime is a clock that starts at 2000-01-01T00:00:00Z and
// advances 1 ms per reading, per instance.
func fakeWalltime() sys.Walltime {
	var n int64
	return func() (int64, int32) {
		n++
		t := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Millisecond)
		return t.Unix(), int32(t.Nanosecond())
	}
}

// fakeNanotime is a monotonic clock that starts at 0 and advances 1 ms
// per reading, per instance.
func fakeNanotime() sys.Nanotime {
	var n int64
	return func() int64 { n += int64(time.Millisecond); return n }
}

// Close closes the instance and frees its memory.
func (i *Instance) Close(ctx context.Context) error { return i.mod.Close(context.WithoutCancel(ctx)) }

// Process hands one input (an Arrow IPC stream, docs/wasm.md) and the
// params (JSON) to the module and returns a copy of its output (an Arrow
// IPC stream). The host writes in and params into buffers it asks the
// module for (ExportAlloc); the module returns an i64 whose low 32 bits
// are a pointer into its memory, bits 32-62 a length and bit 63 set when
// the bytes are an error message (UTF-8) rather than output. The bytes
// belong to the module and are valid until its next call. Errors: the
// module's error message, a trap, an exit, the deadline or an
// out-of-bounds pointer wrap ErrModule; ctx.Err() when the caller's
// context is cancelled.
func (i *Instance) Process(ctx context.Context, in, params []byte) ([]byte, error) {
	inPtr, err := i.put(ctx, in)
	if err != nil {
		return nil, err
	}
	parPtr, err := i.put(ctx, params)
	if err != nil {
		return nil, err
	}
	res, err := i.process.Call(ctx, uint64(inPtr), uint64(len(in)), uint64(parPtr), uint64(len(params)))
	if err != nil {
		return nil, instanceError(ctx, ExportProcess, err, i.stderr)
	}
	ptr, n, isErr := uint32(res[0]), uint32(res[0]>>32&^(errorFlag>>32)), res[0]&errorFlag != 0
	if isErr {
		n = min(n, MaxErrorMessage)
	}
	b, ok := i.mod.Memory().Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("%w: %s returned %d bytes at %#x, outside its memory of %d bytes", ErrModule, ExportProcess, n, ptr, i.mod.Memory().Size())
	}
	if isErr {
		return nil, fmt.Errorf("%w: %s", ErrModule, printable(string(b)))
	}
	i.Copied += int64(n)
	return bytes.Clone(b), nil
}

// put copies b into a buffer the module allocates and returns its pointer.
func (i *Instance) put(ctx context.Context, b []byte) (uint32, error) {
	if len(b) > 1<<31-1 {
		return 0, fmt.Errorf("%w: an input of %d bytes is too large for a 32-bit module", ErrModule, len(b))
	}
	res, err := i.alloc.Call(ctx, uint64(len(b)))
	if err != nil {
		return 0, instanceError(ctx, ExportAlloc, err, i.stderr)
	}
	ptr := uint32(res[0])
	if ptr == 0 && len(b) > 0 {
		return 0, fmt.Errorf("%w: %s(%d) returned 0: the module could not allocate the input", ErrModule, ExportAlloc, len(b))
	}
	if !i.mod.Memory().Write(ptr, b) {
		return 0, fmt.Errorf("%w: %s(%d) returned %#x, outside its memory of %d bytes", ErrModule, ExportAlloc, len(b), ptr, i.mod.Memory().Size())
	}
	i.Copied += int64(len(b))
	return ptr, nil
}

// instanceError says why a call into the module failed.
func instanceError(ctx context.Context, what string, err error, stderr *boundedBuffer) error {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errDeadline) {
		return ctx.Err()
	}
	out := stderr.lastLines()
	var ee *sys.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == sys.ExitCodeDeadlineExceeded:
		return fmt.Errorf("%w: %s did not finish within its CPU time limit", ErrModule, what)
	case errors.As(err, &ee):
		if out != "" {
			return fmt.Errorf("%w: %s exited with code %d: %s", ErrModule, what, ee.ExitCode(), out)
		}
		return fmt.Errorf("%w: %s exited with code %d", ErrModule, what, ee.ExitCode())
	}
	if out != "" {
		return fmt.Errorf("%w: %s trapped: %s (output: %s)", ErrModule, what, printable(firstLine(err.Error())), out)
	}
	return fmt.Errorf("%w: %s trapped: %s", ErrModule, what, printable(firstLine(err.Error())))
}

// errDeadline is the cause a caller may give WithTimeoutCause for the
// module's CPU limit.
var errDeadline = errors.New("udf: time limit")

// WithTimeout returns ctx with lim's timeout: the context for Instantiate
// and Process. The caller's own cancellation stays distinguishable.
func WithTimeout(ctx context.Context, lim Limits) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, lim.timeout(), errDeadline)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// printable cuts s to MaxErrorMessage bytes of one line.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	s = strings.TrimSpace(s)
	if len(s) > MaxErrorMessage {
		s = strings.ToValidUTF8(s[:MaxErrorMessage], "") + "…"
	}
	return s
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	max int
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// lastLines returns the first line the module printed (a Go runtime
// error's cause; its goroutine dump follows).
func (b *boundedBuffer) lastLines() string {
	return printable(firstLine(strings.TrimSpace(b.buf.String())))
}
