package functions

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/udftest"
)

// wasmFixture is the modules of udf/examples and udf/testdata/hostile,
// built once per test binary, and a host shared by the tests (a module of
// 14 MB compiles in tens of seconds; udftest.CacheDir keeps the compiled
// code across runs).
var wasmFixture = sync.OnceValues(func() (*wasmModules, error) {
	dir, err := os.MkdirTemp("", "functions-wasm-")
	if err != nil {
		return nil, err
	}
	paths, err := udftest.Build(dir, append(udftest.Examples, udftest.Hostile...)...)
	if err != nil {
		return nil, err
	}
	w := &wasmModules{files: map[string][]byte{}}
	for n, p := range paths {
		if w.files[n], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	os.RemoveAll(dir)
	if w.host, err = udf.NewHost(udftest.CacheDir()); err != nil {
		return nil, err
	}
	return w, nil
})

type wasmModules struct {
	files map[string][]byte
	host  *udf.Host
}

// memModules is a ModuleStore in memory.
type memModules struct {
	mu      sync.Mutex
	modules map[string][]byte // by digest
	records []string          // name=digest, in order
}

func (s *memModules) Put(_ context.Context, name string, info udf.Info, wasm []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.modules == nil {
		s.modules = map[string][]byte{}
	}
	s.modules[info.Digest] = wasm
	s.records = append(s.records, name+"="+info.Digest)
	return nil
}

func (s *memModules) Get(_ context.Context, digest string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.modules[digest]
	if !ok {
		return nil, fmt.Errorf("module %s: %w", digest, model.ErrNotFound)
	}
	return b, nil
}

// wasmModel is a test model with WebAssembly enabled.
func wasmModel(t *testing.T) (*testModel, *wasmModules) {
	t.Helper()
	if !duck.ArrowAvailable {
		t.Skip("the wasm function needs the duckdb_arrow build tag")
	}
	w, err := wasmFixture()
	if err != nil {
		t.Skipf("the Go toolchain cannot build wasip1 modules here: %v", err)
	}
	m := newModel(t)
	m.wasm, m.modules = w.host, &memModules{}
	return m, w
}

// register stages module name of w and registers it under as.
func (m *testModel) register(w *wasmModules, name, as string) Result {
	m.t.Helper()
	uri := "staging/m/r-" + as + "/" + name + ".wasm"
	m.put(uri, w.files[name])
	return m.mustApply("register_module", fmt.Sprintf(`{"name":%q,"payload":{"uri":%q}}`, as, uri))
}

func TestWasmExamples(t *testing.T) {
	m, w := wasmModel(t)
	// Before any registration: a clear error, and the batch goes on.
	if _, err := m.applyBatch(request{"wasm", `{"module":"gc","input":"SELECT 1 AS x","table":"t"}`}); err == nil || !strings.Contains(err.Error(), `module "gc" is not registered`) {
		t.Errorf("wasm before any registration: %v", err)
	}
	res := m.register(w, "greatcircle", "gc")
	if len(res.Modules) != 1 || res.Modules[0] != udf.Digest(w.files["greatcircle"]) {
		t.Errorf("register_module: Modules %v, want the module's digest", res.Modules)
	}
	m.register(w, "filter", "filter")
	m.register(w, "flatmap", "flatmap")
	m.exec(`CREATE TABLE legs AS SELECT * FROM (VALUES
		(1, 49.0097, 2.5479, 40.6413, -73.7781, 'a,b'),
		(2, 51.4700, -0.4543, 51.4700, -0.4543, ''),
		(3, 35.5494, 139.7798, 33.9416, -118.4085, 'x')) v(id, lat1, lon1, lat2, lon2, tags)`)

	// Map.
	res = m.mustApply("wasm", `{"module":"gc","input":"SELECT id, lat1, lon1, lat2, lon2 FROM legs ORDER BY id","table":"dist","mode":"replace"}`)
	if res.Rows != 3 || len(res.Modules) != 1 || res.Modules[0] != udf.Digest(w.files["greatcircle"]) || res.Tables[0] != "dist" {
		t.Errorf("wasm map: result %+v", res)
	}
	got := m.rows("SELECT id, round(distance_km) FROM dist ORDER BY id")
	if want := []string{"1|5833", "2|0", "3|8813"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("distances %v, want %v", got, want)
	}
	// The args may declare the output's schema: names checked, types cast.
	m.mustApply("wasm", `{"module":"gc","input":"SELECT id, lat1, lon1, lat2, lon2 FROM legs ORDER BY id","table":"dist1","mode":"replace","columns":[{"name":"id","type":"INTEGER"},{"name":"lat1","type":"DOUBLE"},{"name":"lon1","type":"DOUBLE"},{"name":"lat2","type":"DOUBLE"},{"name":"lon2","type":"DOUBLE"},{"name":"distance_km","type":"DECIMAL(9,1)"}]}`)
	if got := m.rows("SELECT typeof(id), typeof(distance_km), distance_km FROM dist1 ORDER BY id LIMIT 1"); got[0] != "INTEGER|DECIMAL(9,1)|5833.5" {
		t.Errorf("declared columns: %v", got)
	}
	m.applyErr("wasm", `{"module":"gc","input":"SELECT id, lat1, lon1, lat2, lon2 FROM legs ORDER BY id","table":"dist2","columns":[{"name":"id","type":"INTEGER"},{"name":"km","type":"DOUBLE"}]}`, "the output's columns are id, lat1, lon1, lat2, lon2, distance_km, the args declare id, km")
	// Filter, appended to a new table then again to the same.
	for range 2 {
		m.mustApply("wasm", `{"module":"filter","input":"SELECT id, lat1 FROM legs ORDER BY id","table":"north","params":{"column":"lat1","min":40}}`)
	}
	if got := m.rows("SELECT id FROM north ORDER BY id"); strings.Join(got, " ") != "1 1 2 2" {
		t.Errorf("filter: %v", got)
	}
	// Flat-map: one row in, several out.
	m.mustApply("wasm", `{"module":"flatmap","input":"SELECT id, tags FROM legs ORDER BY id","table":"tags","params":{"column":"tags"}}`)
	if got := m.rows("SELECT id, tags, ordinal FROM tags ORDER BY id, ordinal"); strings.Join(got, " ") != "1|a|0 1|b|1 3|x|0" {
		t.Errorf("flat-map: %v", got)
	}
	// The SELECT rules are refresh's.
	m.applyErr("wasm", `{"module":"gc","input":"SELECT * FROM read_csv('x.csv')","table":"t"}`, "read_csv")
	m.applyErr("wasm", `{"module":"nope","input":"SELECT 1","table":"t"}`, "module \"nope\" is not registered")
}

// TestWasmHostile: each hostile module fails its request alone within its
// limit, with a clear error; the model goes on.
func TestWasmHostile(t *testing.T) {
	m, w := wasmModel(t)
	m.register(w, "greatcircle", "gc")
	m.exec(`CREATE TABLE pts AS SELECT range AS id, 1.0 AS lat1, 2.0 AS lon1, 3.0 AS lat2, 4.0 AS lon2 FROM range(5000)`)
	m.exec(`CREATE TABLE x AS SELECT 'text' AS x`)

	// An import of a WASI file function is refused at registration.
	m.put("staging/m/r-w/wasifile.wasm", w.files["wasifile"])
	m.applyErr("register_module", `{"name":"wf","payload":{"uri":"staging/m/r-w/wasifile.wasm"}}`, "imports wasi_snapshot_preview1.path_unlink_file, which the sandbox does not grant")
	m.put("staging/m/r-n/junk.wasm", []byte("not a module"))
	m.applyErr("register_module", `{"name":"junk","payload":{"uri":"staging/m/r-n/junk.wasm"}}`, "not a valid WebAssembly module")

	for _, h := range []string{"loop", "alloc", "oob", "schema"} {
		m.register(w, h, h)
	}
	cases := []struct {
		module, table, mode string
		limits              udf.Limits
		want                string
	}{
		{"loop", "out", "replace", udf.Limits{Timeout: time.Second}, "module loop: module: teatree_process did not finish within its CPU time limit"},
		{"alloc", "out", "replace", udf.Limits{MemoryPages: 1024}, "out of memory"},
		{"oob", "out", "replace", udf.Limits{}, "outside its memory"},
		{"schema", "out", "replace", udf.Limits{}, "the output's schema changed from schema:"},
		{"gc", "x", "append", udf.Limits{}, "write the output of module gc"},
	}
	for _, c := range cases {
		t.Run(c.module, func(t *testing.T) {
			m.limits = c.limits
			defer func() { m.limits = udf.Limits{} }()
			start := time.Now()
			m.applyErr("wasm", fmt.Sprintf(`{"module":%q,"input":"SELECT * FROM pts ORDER BY id","table":%q,"mode":%q}`, c.module, c.table, c.mode), c.want)
			t.Logf("%s failed after %s", c.module, time.Since(start))
			// The model goes on: the next request applies.
			m.mustApply("wasm", `{"module":"gc","input":"SELECT * FROM pts ORDER BY id LIMIT 3","table":"ok","mode":"replace"}`)
		})
	}
	if got := m.rows("SELECT count(*) FROM pts"); got[0] != "5000" {
		t.Errorf("pts has %v rows", got)
	}
}

// TestWasmReplay: applying the same requests to a new model gives a
// byte-identical table.
func TestWasmReplay(t *testing.T) {
	var sums []string
	for range 2 {
		m, w := wasmModel(t)
		m.exec(`CREATE TABLE pts AS SELECT range AS id, (range % 90)::DOUBLE AS lat1, (range % 180)::DOUBLE AS lon1, (range % 45)::DOUBLE AS lat2, (range % 77)::DOUBLE AS lon2, (range % 7)::VARCHAR || ',' || (range % 3)::VARCHAR AS tags FROM range(10000)`)
		m.register(w, "greatcircle", "gc")
		m.register(w, "flatmap", "fm")
		m.mustApply("wasm", `{"module":"gc","input":"SELECT * FROM pts ORDER BY id","table":"d","mode":"replace"}`)
		m.mustApply("wasm", `{"module":"fm","input":"SELECT * FROM d ORDER BY id","table":"d2","params":{"column":"tags"}}`)
		sums = append(sums, m.rows(`SELECT md5(string_agg(d2::VARCHAR, chr(10) ORDER BY rowid)) || ':' || count(*) FROM d2`)[0])
	}
	if sums[0] != sums[1] {
		t.Errorf("replay: %s != %s", sums[0], sums[1])
	}
	t.Logf("d2: %s", sums[0])
}
