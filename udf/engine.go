package udf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// engine is wazero in this process: it compiles modules and, in a sandbox
// process (worker.go), runs them. It compiles without
// WithCloseOnContextDone: the CPU cap is the sandbox process's death at
// the deadline, and wazero v1.12.0's check costs a call into Go at every
// branch of a Go module (docs/wasm.md, "Sandbox process"). wazero's file
// cache does not key compiled code by that setting, so the engine's cache
// lives in a directory of its own (cacheSubdir) that only unchecked code
// ever enters.
type engine struct {
	cache wazero.CompilationCache

	mu       sync.Mutex
	runtimes map[uint32]wazero.Runtime // by memory pages
	compiled map[compiledKey]wazero.CompiledModule
}

// cacheSubdir is the directory under a Host's cache directory that holds
// the engine's compiled code (see engine).
const cacheSubdir = "unchecked"

type compiledKey struct {
	pages  uint32
	digest string
}

// newEngine returns an engine whose compilation cache is kept in the
// directory dir (created if missing); "" keeps it in memory only.
func newEngine(dir string) (*engine, error) {
	var cache wazero.CompilationCache
	if dir == "" {
		cache = wazero.NewCompilationCache()
	} else {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(dir); err != nil {
			return nil, fmt.Errorf("udf: compilation cache: %w", err)
		}
	}
	return &engine{cache: cache, runtimes: map[uint32]wazero.Runtime{}, compiled: map[compiledKey]wazero.CompiledModule{}}, nil
}

// close closes the runtimes and the compilation cache.
func (e *engine) close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, r := range e.runtimes {
		errs = append(errs, r.Close(ctx))
	}
	e.runtimes, e.compiled = map[uint32]wazero.Runtime{}, map[compiledKey]wazero.CompiledModule{}
	errs = append(errs, e.cache.Close(ctx))
	return errors.Join(errs...)
}

// runtime returns the runtime for pages, with WASI instantiated. e.mu is
// held.
func (e *engine) runtime(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	if r, ok := e.runtimes[pages]; ok {
		return r, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(e.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(false)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("udf: instantiate wasi: %w", err)
	}
	e.runtimes[pages] = r
	return r, nil
}

// compile returns wasm (of the given digest) compiled for a runtime of
// pages and checked against the ABI (check).
func (e *engine) compile(ctx context.Context, pages uint32, digest string, wasm []byte) (wazero.CompiledModule, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := compiledKey{pages, digest}
	if c, ok := e.compiled[k]; ok {
		return c, nil
	}
	r, err := e.runtime(ctx, pages)
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
	e.compiled[k] = c
	return c, nil
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

// instance is one instantiation of a module in the sandbox process.
type instance struct {
	mod     api.Module
	alloc   api.Function
	process api.Function
	stderr  *boundedBuffer
}

// instantiate instantiates c (compiled for pages), runs its
// initialisation and checks its ABI version.
func (e *engine) instantiate(ctx context.Context, pages uint32, c wazero.CompiledModule) (*instance, error) {
	e.mu.Lock()
	r := e.runtimes[pages]
	e.mu.Unlock()
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
		return nil, instanceError("instantiate", err, stderr)
	}
	i := &instance{mod: mod, alloc: mod.ExportedFunction(ExportAlloc), process: mod.ExportedFunction(ExportProcess), stderr: stderr}
	if init := mod.ExportedFunction(ExportInitialize); init != nil {
		if _, err := init.Call(ctx); err != nil {
			mod.Close(ctx)
			return nil, instanceError(ExportInitialize, err, stderr)
		}
	}
	v, err := mod.ExportedFunction(ExportVersion).Call(ctx)
	if err != nil {
		mod.Close(ctx)
		return nil, instanceError(ExportVersion, err, stderr)
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

// close closes the instance and frees its memory.
func (i *instance) close(ctx context.Context) error { return i.mod.Close(ctx) }

// call hands one input and the params to the module (see
// Instance.Process) and returns its output, which belongs to the module
// until its next call.
func (i *instance) call(ctx context.Context, in, params []byte) ([]byte, error) {
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
		return nil, instanceError(ExportProcess, err, i.stderr)
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
	return b, nil
}

// put copies b into a buffer the module allocates and returns its pointer.
func (i *instance) put(ctx context.Context, b []byte) (uint32, error) {
	if len(b) > 1<<31-1 {
		return 0, fmt.Errorf("%w: an input of %d bytes is too large for a 32-bit module", ErrModule, len(b))
	}
	res, err := i.alloc.Call(ctx, uint64(len(b)))
	if err != nil {
		return 0, instanceError(ExportAlloc, err, i.stderr)
	}
	ptr := uint32(res[0])
	if ptr == 0 && len(b) > 0 {
		return 0, fmt.Errorf("%w: %s(%d) returned 0: the module could not allocate the input", ErrModule, ExportAlloc, len(b))
	}
	if !i.mod.Memory().Write(ptr, b) {
		return 0, fmt.Errorf("%w: %s(%d) returned %#x, outside its memory of %d bytes", ErrModule, ExportAlloc, len(b), ptr, i.mod.Memory().Size())
	}
	return ptr, nil
}

// instanceError says why a call into the module failed.
func instanceError(what string, err error, stderr *boundedBuffer) error {
	out := stderr.lastLines()
	var ee *sys.ExitError
	if errors.As(err, &ee) {
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

// boundedBuffer keeps the first max bytes written to it. It is not safe
// for concurrent use.
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

// lastLines returns the first line written (a Go runtime error's cause;
// its goroutine dump follows).
func (b *boundedBuffer) lastLines() string {
	return printable(firstLine(strings.TrimSpace(b.buf.String())))
}
