package udf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/udftest"
)

// modules are the built modules by name; TestMain builds them.
var modules map[string][]byte

// host is shared by the tests: compiling a module of 14 MB takes long,
// and its compilation cache lives in the user's cache directory across
// runs (udftest.CacheDir).
var host *udf.Host

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "udf-modules-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	paths, err := udftest.Build(dir, append(udftest.Examples, udftest.Hostile...)...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "SKIP: the Go toolchain cannot build wasip1 modules:", err)
		os.RemoveAll(dir)
		os.Exit(0)
	}
	modules = map[string][]byte{}
	for n, p := range paths {
		if modules[n], err = os.ReadFile(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if host, err = udf.NewHost(udftest.CacheDir()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	host.Close(context.Background())
	os.RemoveAll(dir)
	os.Exit(code)
}

// stream encodes a batch of columns lat1, lon1, lat2, lon2 as an Arrow IPC stream.
func stream(t *testing.T, rows [][4]float64) []byte {
	t.Helper()
	mem := memory.NewGoAllocator()
	var fields []arrow.Field
	var cols []arrow.Array
	for c, name := range []string{"lat1", "lon1", "lat2", "lon2"} {
		b := array.NewFloat64Builder(mem)
		for _, r := range rows {
			b.Append(r[c])
		}
		fields = append(fields, arrow.Field{Name: name, Type: arrow.PrimitiveTypes.Float64})
		cols = append(cols, b.NewArray())
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(len(rows)))
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.Bytes()
}

func instantiate(t *testing.T, h *udf.Host, name string, lim udf.Limits) (*udf.Instance, context.Context) {
	t.Helper()
	wasm := modules[name]
	if err := h.Compile(context.Background(), udf.Digest(wasm), wasm, lim); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := udf.WithTimeout(context.Background(), lim)
	t.Cleanup(cancel)
	in, err := h.Instantiate(ctx, udf.Digest(wasm), wasm, lim)
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	t.Cleanup(func() { in.Close(ctx) })
	return in, ctx
}

func TestValidateExamples(t *testing.T) {
	h := host
	for _, n := range udftest.Examples {
		info, err := h.Validate(context.Background(), modules[n])
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		for _, e := range []string{udf.ExportAlloc, udf.ExportProcess, udf.ExportVersion} {
			if !strings.Contains(strings.Join(info.Exports, " "), e) {
				t.Errorf("%s: exports %v lack %s", n, info.Exports, e)
			}
		}
		if info.Digest != udf.Digest(modules[n]) || len(info.Digest) != 64 {
			t.Errorf("%s: digest %q", n, info.Digest)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	h := host
	cases := map[string][]byte{
		"not wasm":         []byte("\x00asm but not really"),
		"wasifile":         modules["wasifile"],
		"empty":            nil,
		"no abi (minimal)": {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00},
	}
	want := map[string]string{
		"wasifile":         "imports wasi_snapshot_preview1.path_unlink_file, which the sandbox does not grant",
		"no abi (minimal)": "exports no memory",
		"not wasm":         "not a valid WebAssembly module",
		"empty":            "not a valid WebAssembly module",
	}
	for name, wasm := range cases {
		_, err := h.Validate(context.Background(), wasm)
		if !errors.Is(err, udf.ErrModule) || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: error %v; want ErrModule with %q", name, err, want[name])
		}
	}
}

func TestProcessGreatCircle(t *testing.T) {
	h := host
	in, ctx := instantiate(t, h, "greatcircle", udf.Limits{})
	// Paris CDG to New York JFK, about 5834 km.
	out, err := in.Process(ctx, stream(t, [][4]float64{{49.0097, 2.5479, 40.6413, -73.7781}, {0, 0, 0, 0}}), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ipc.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if !r.Next() {
		t.Fatalf("no output batch: %v", r.Err())
	}
	rec := r.RecordBatch()
	d := rec.Column(4).(*array.Float64)
	if got := d.Value(0); math.Abs(got-5834) > 10 || d.Value(1) != 0 || rec.Schema().Field(4).Name != "distance_km" {
		t.Errorf("distances %v (schema %s); want about 5834 and 0", d, rec.Schema())
	}
	// The module's own error comes back as the error.
	_, err = in.Process(ctx, stream(t, [][4]float64{{1, 2, 3, 4}}), []byte(`{"lat1":"nope"}`))
	if !errors.Is(err, udf.ErrModule) || !strings.Contains(err.Error(), `no column "nope"`) {
		t.Errorf("error %v; want the module's error about column nope", err)
	}
}

// TestHostile runs each hostile module within its limit: each fails alone
// with a clear error, and the host keeps running the example afterwards.
func TestHostile(t *testing.T) {
	h := host
	input := stream(t, [][4]float64{{1, 2, 3, 4}})
	cases := []struct {
		name string
		lim  udf.Limits
		want string
	}{
		{"loop", udf.Limits{Timeout: 500 * time.Millisecond}, "did not finish within its CPU time limit"},
		{"alloc", udf.Limits{MemoryPages: 1024, Timeout: 20 * time.Second}, "out of memory"},
		{"oob", udf.Limits{}, "outside its memory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			in, ctx := instantiate(t, h, c.name, c.lim)
			_, err := in.Process(ctx, input, []byte(`{}`))
			if !errors.Is(err, udf.ErrModule) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want ErrModule with %q", err, c.want)
			}
			if c.lim.Timeout > 0 && time.Since(start) > c.lim.Timeout+5*time.Second {
				t.Errorf("took %s, limit %s", time.Since(start), c.lim.Timeout)
			}
			t.Logf("%s: %v (%s)", c.name, err, time.Since(start))
		})
	}
	// The oob module's alloc(7) points past its memory.
	in, ctx := instantiate(t, h, "oob", udf.Limits{})
	if _, err := in.Process(ctx, []byte("1234567"), nil); !errors.Is(err, udf.ErrModule) || !strings.Contains(err.Error(), "teatree_alloc(7) returned 0xfffffff0, outside its memory") {
		t.Errorf("alloc out of bounds: %v", err)
	}
	// The host still works.
	gc, ctx := instantiate(t, h, "greatcircle", udf.Limits{})
	if _, err := gc.Process(ctx, input, nil); err != nil {
		t.Errorf("after the hostile modules: %v", err)
	}
}

// TestCancel: the caller's cancellation is ctx.Err(), not the module's fault.
func TestCancel(t *testing.T) {
	h := host
	ctx, cancel := context.WithCancel(context.Background())
	wasm := modules["loop"]
	in, err := h.Instantiate(ctx, udf.Digest(wasm), wasm, udf.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = in.Process(ctx, stream(t, [][4]float64{{1, 2, 3, 4}}), nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, udf.ErrModule) {
		t.Errorf("error %v; want context.Canceled", err)
	}
}
