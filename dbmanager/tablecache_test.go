package dbmanager_test

import (
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// The applier keeps the tables it looked up across batches: a table
// dropped and created again with other columns in a later batch must be
// looked up again.
func TestBatchTableCacheAfterDDL(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "tcache"}).ID
	run(t, s, m, nil)
	columns := func(names ...string) []map[string]string {
		var cs []map[string]string
		for _, n := range names {
			cs = append(cs, map[string]string{"name": n, "type": "VARCHAR"})
		}
		return cs
	}
	step := func(reqs ...model.Request) map[string]model.Notification {
		t.Helper()
		s.Submit(t, reqs...)
		var ids []string
		for _, r := range reqs {
			ids = append(ids, r.ID)
		}
		return s.Outcomes(t, m, wait, ids...)
	}
	want := func(got map[string]model.Notification, id string, st model.Status) {
		t.Helper()
		if got[id].Status != st {
			t.Errorf("%s: %s (%s), want %s", id, got[id].Status, got[id].Error, st)
		}
	}
	got := step(stacktest.Request(m, "create-1", "create_table", map[string]any{"table": "t", "columns": columns("a")}),
		stacktest.Request(m, "append-1", "append", map[string]any{"table": "t", "rows": []map[string]any{{"a": "x"}}}))
	want(got, "append-1", model.StatusApplied)
	// A later batch re-creates t with another column.
	got = step(stacktest.Request(m, "drop-2", "drop_table", map[string]any{"table": "t"}),
		stacktest.Request(m, "create-2", "create_table", map[string]any{"table": "t", "columns": columns("a", "b")}))
	want(got, "create-2", model.StatusApplied)
	got = step(stacktest.Request(m, "append-3", "append", map[string]any{"table": "t", "rows": []map[string]any{{"a": "x", "b": "y"}}}))
	want(got, "append-3", model.StatusApplied)
	// In one batch: u is created and appended to, then a request fails:
	// the transaction is rolled back and applied again up to the failure;
	// the tables looked up afterwards are those committed.
	got = step(stacktest.Request(m, "create-4", "create_table", map[string]any{"table": "u", "columns": columns("a")}),
		stacktest.Request(m, "append-4", "append", map[string]any{"table": "u", "rows": []map[string]any{{"a": "x"}}}),
		stacktest.Request(m, "bad-4", "append", map[string]any{"table": "t", "rows": []map[string]any{{"nope": "x"}}}))
	want(got, "append-4", model.StatusApplied)
	want(got, "bad-4", model.StatusFailed)
	got = step(stacktest.Request(m, "append-5", "append", map[string]any{"table": "t", "rows": []map[string]any{{"b": "z"}}}),
		stacktest.Request(m, "append-6", "append", map[string]any{"table": "u", "rows": []map[string]any{{"b": "z"}}}))
	want(got, "append-5", model.StatusApplied)
	want(got, "append-6", model.StatusFailed)
}
