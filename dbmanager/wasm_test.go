package dbmanager_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/udftest"
)

// wasmFiles builds the modules the test needs once (udftest.Build).
var wasmFiles = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "dbmanager-wasm-")
	if err != nil {
		return nil, err
	}
	return udftest.Build(dir, "greatcircle", "loop")
})

// TestWasmThroughTheStream: a module registered through the request
// stream runs in a later request; a hostile one (an endless loop) fails
// alone within the CPU limit and the queue goes on; the registration is
// in Postgres and the object store, the version's request records the
// digest; a second model given the same request log ends with a
// byte-identical table.
func TestWasmThroughTheStream(t *testing.T) {
	if !duck.ArrowAvailable {
		t.Skip("the wasm function needs the duckdb_arrow build tag")
	}
	files, err := wasmFiles()
	if err != nil {
		t.Skipf("the Go toolchain cannot build wasip1 modules here: %v", err)
	}
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	sums := map[string]string{}
	for _, m := range []string{"geo", "geo-replay"} {
		s.CreateModel(t, controldb.Model{ID: m})
		stage := func(id, module string) string {
			key := model.StagingPrefix(m, id) + "module.wasm"
			if err := objstore.PutFile(ctx, s.Store, key, files[module]); err != nil {
				t.Fatal(err)
			}
			return key
		}
		reqs := []model.Request{
			stacktest.Request(m, m+"-create", "create_table", map[string]any{"table": "pts", "columns": []map[string]string{
				{"name": "id", "type": "BIGINT"}, {"name": "lat1", "type": "DOUBLE"}, {"name": "lon1", "type": "DOUBLE"}, {"name": "lat2", "type": "DOUBLE"}, {"name": "lon2", "type": "DOUBLE"}}}),
			stacktest.Request(m, m+"-rows", "append", map[string]any{"table": "pts", "rows": []map[string]any{
				{"id": 1, "lat1": 49.0097, "lon1": 2.5479, "lat2": 40.6413, "lon2": -73.7781},
				{"id": 2, "lat1": 0, "lon1": 0, "lat2": 0, "lon2": 1}}}),
			stacktest.Request(m, m+"-reg-gc", "register_module", map[string]any{"name": "gc", "payload": map[string]string{"uri": stage(m+"-reg-gc", "greatcircle")}}),
			stacktest.Request(m, m+"-reg-loop", "register_module", map[string]any{"name": "loop", "payload": map[string]string{"uri": stage(m+"-reg-loop", "loop")}}),
			stacktest.Request(m, m+"-run-loop", "wasm", map[string]any{"module": "loop", "input": "SELECT * FROM pts ORDER BY id", "table": "never"}),
			stacktest.Request(m, m+"-run-gc", "wasm", map[string]any{"module": "gc", "input": "SELECT * FROM pts ORDER BY id", "table": "dist", "mode": "replace"}),
		}
		s.Submit(t, reqs...)
		cfg := testConfig(s, m)
		cfg.WasmTimeout = 2 * time.Second
		cfg.WasmCacheDir = udftest.CacheDir()
		h := runConfig(t, s, cfg, nil)
		got := s.Outcomes(t, m, 5*time.Minute, m+"-create", m+"-rows", m+"-reg-gc", m+"-reg-loop", m+"-run-loop", m+"-run-gc")
		for id, n := range got {
			want := model.StatusApplied
			if id == m+"-run-loop" {
				want = model.StatusFailed
			}
			if n.Status != want {
				t.Errorf("%s: %s (%s), want %s", id, n.Status, n.Error, want)
			}
		}
		if e := got[m+"-run-loop"].Error; !strings.Contains(e, "did not finish within its CPU time limit") {
			t.Errorf("run-loop error %q", e)
		}
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
		mods, err := s.Ctl.ListModules(ctx, m)
		if err != nil || len(mods) != 2 {
			t.Fatalf("modules %+v, %v", mods, err)
		}
		digest := udf.Digest(mustRead(t, files["greatcircle"]))
		if _, err := s.Store.Stat(ctx, "modules/"+m+"/"+digest+".wasm"); err != nil {
			t.Errorf("module not in the object store: %v", err)
		}
		db, _ := latest(t, s, m)
		var sum string
		if err := db.QueryRow(`SELECT md5(string_agg(dist::VARCHAR, chr(10) ORDER BY rowid)) FROM dist`).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		sums[m] = sum
	}
	if sums["geo"] != sums["geo-replay"] {
		t.Errorf("replay: table dist %s != %s", sums["geo"], sums["geo-replay"])
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
