package dbmanager_test

import (
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// TestLineage: a version records its parent, every request of its stream
// range with function, args digest and outcome (applied, failed,
// cancelled), and the teatree and DuckDB versions that made it, in
// Postgres and in its manifest.
func TestLineage(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "lineage"}).ID
	first := createTable(m, "create")
	s.Submit(t, first)
	h := run(t, s, m, nil)
	v1 := s.Outcomes(t, m, wait, "create")["create"].Version
	h.stop(t)
	// The next version: an applied append, a failed one (no such table),
	// a cancelled one, in one batch (the db-manager is stopped meanwhile).
	bad := stacktest.Request(m, "bad", "append", map[string]any{"table": "nope", "rows": []map[string]any{{"n": 1}}})
	reqs := []model.Request{appendRow(m, "a-1", 1), bad, appendRow(m, "a-2", 2)}
	s.Submit(t, reqs...)
	cancel(t, s, m, "a-2")
	run(t, s, m, nil)
	got := s.Outcomes(t, m, wait, "a-1", "bad", "a-2")
	v2 := got["a-1"].Version
	if v2 != v1+1 || got["bad"].Status != model.StatusFailed || got["a-2"].Status != model.StatusCancelled {
		t.Fatalf("outcomes %+v (version 1: %d)", got, v1)
	}
	v, err := s.Ctl.GetVersion(ctx, m, v2)
	if err != nil {
		t.Fatal(err)
	}
	l := v.Lineage
	if l == nil {
		t.Fatal("no lineage in Postgres")
	}
	if l.Parent != v1 || l.Build == "" || l.DuckDB == "" || l.DuckDB[0] != 'v' {
		t.Errorf("lineage parent %d build %q duckdb %q; want parent %d and both versions", l.Parent, l.Build, l.DuckDB, v1)
	}
	want := map[string]model.Status{"a-1": model.StatusApplied, "bad": model.StatusFailed, "a-2": model.StatusCancelled}
	if len(l.Requests) != len(want) {
		t.Fatalf("lineage requests %+v, want %v", l.Requests, want)
	}
	for i, r := range l.Requests {
		if want[r.ID] != r.Status || r.Digest != reqs[i].Digest() || r.Function != "append" || r.Seq == 0 {
			t.Errorf("request %d: %+v, want %s %s digest %s", i, r, reqs[i].ID, want[reqs[i].ID], reqs[i].Digest())
		}
	}
	// The manifest carries the same lineage.
	rc, err := s.Store.Get(ctx, v.ManifestURI)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	var mf snapshot.Manifest
	if err := json.Unmarshal(data, &mf); err != nil {
		t.Fatal(err)
	}
	if mf.Lineage == nil || len(mf.Lineage.Requests) != 3 || mf.Lineage.Parent != v1 {
		t.Errorf("manifest lineage %+v", mf.Lineage)
	}
	first1, err := s.Ctl.GetVersion(ctx, m, v1)
	if err != nil || first1.Lineage == nil || first1.Lineage.Parent != 0 || len(first1.Lineage.Requests) != 1 || first1.Lineage.Requests[0].Digest != first.Digest() {
		t.Errorf("first version lineage %+v, %v", first1.Lineage, err)
	}
}
