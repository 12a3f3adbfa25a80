package dbmanager

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// TestLineageModules: the module digests a function reports
// (functions.Result.Modules, set by a WASM function) are recorded with
// its request in the batch's transaction and gathered, sorted and each
// once, into the lineage of the version whose range holds them; failed
// and cancelled requests contribute none.
func TestLineageModules(t *testing.T) {
	ctx := context.Background()
	db, err := duck.Open(ctx, filepath.Join(t.TempDir(), "live.duckdb"), duck.Options{Threads: 1, MemoryLimit: "64MB"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, schemaSQL); err != nil {
		t.Fatal(err)
	}
	m := &Manager{db: db, log: slog.New(slog.DiscardHandler), duckdbVersion: "v1.test"}
	items := []*item{
		{seq: 5, req: model.Request{ID: "w-1", Function: "wasm"}, digest: "d1", status: model.StatusApplied, result: functions.Result{Tables: []string{"out"}, Modules: []string{"bb", "aa"}}},
		{seq: 6, req: model.Request{ID: "a-1", Function: "append"}, digest: "d2", status: model.StatusApplied, result: functions.Result{Tables: []string{"t"}}},
		{seq: 7, req: model.Request{ID: "w-2", Function: "wasm"}, digest: "d3", status: model.StatusApplied, result: functions.Result{Tables: []string{"out"}, Modules: []string{"aa"}}},
		{seq: 8, req: model.Request{ID: "w-3", Function: "wasm"}, digest: "d4", status: model.StatusFailed, err: errCancelled, result: functions.Result{Modules: []string{"cc"}}},
		{seq: 9, req: model.Request{ID: "w-4", Function: "wasm"}, digest: "d5", status: model.StatusCancelled, err: errCancelled},
	}
	for _, it := range items {
		it.queued = time.Now()
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := m.record(ctx, conn, items, nil); err != nil {
		t.Fatal(err)
	}
	l, err := m.lineage(ctx, cut{Version: 3, FirstSeq: 5, LastSeq: 9})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"aa", "bb"}, l.Modules); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	if l.Parent != 2 || l.DuckDB != "v1.test" || len(l.Requests) != 5 || l.Requests[4].Status != model.StatusCancelled || l.Requests[3].Digest != "d4" {
		t.Errorf("lineage %+v", l)
	}
}
