package dbmanager_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// flightsParquet writes n flights (id, origin, delay, distance) as Parquet,
// the shape of the demo's flights, and returns the file's bytes.
func flightsParquet(t *testing.T, n int) []byte {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	path := filepath.Join(t.TempDir(), "flights.parquet")
	if _, err := db.ExecContext(ctx, `COPY (SELECT i::BIGINT AS id, ['ORD','ATL','LAX','SFO','JFK'][i % 5 + 1] AS origin,
		((i * 37) % 180 - 20)::BIGINT AS delay, (100 + (i * 13) % 2500)::DOUBLE / 3 AS distance FROM range(?) t(i)) TO '`+path+`' (FORMAT parquet)`, n); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func verify(t *testing.T, s *stacktest.Stack, m string, from int64) (dbmanager.VerifyReport, error) {
	t.Helper()
	return dbmanager.Verify(context.Background(), stacktest.Logger(t), s.JS, s.Ctl, s.Store,
		dbmanager.VerifyOptions{Model: m, From: from, Dir: t.TempDir(), Threads: 1, MemoryLimit: "256MB"})
}

// TestVerify: teactl model verify's replay agrees with the published
// versions of a model whose versions mix an append from a staged file,
// derive (kept current), upsert, update, delete, refresh, a failed and a
// cancelled request; detects a live file edited behind the db-manager's
// back in the version cut after the edit, naming table and version;
// --from-version starts there; a staged payload deleted or a request gone
// from the stream is reported naming the request.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "verify", Retention: 50}).ID
	cfg := testConfig(s, m)
	cfg.KeepStaged = true
	h := runConfig(t, s, cfg, nil)

	uri := model.StagingPrefix(m, "load") + "flights.parquet"
	data := flightsParquet(t, 5000)
	if err := s.Store.Put(ctx, uri, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	steps := []model.Request{
		stacktest.Request(m, "create", "create_table", map[string]any{"table": "flights", "columns": []map[string]string{
			{"name": "id", "type": "BIGINT"}, {"name": "origin", "type": "VARCHAR"}, {"name": "delay", "type": "BIGINT"}, {"name": "distance", "type": "DOUBLE"}}, "primary_key": []string{"id"}}),
		stacktest.Request(m, "load", "append", map[string]any{"table": "flights", "payload": map[string]any{"uri": uri, "format": "parquet"}}),
		stacktest.Request(m, "derive", "derive", map[string]any{"table": "by_origin",
			"query": "SELECT origin, count(*) AS flights, avg(delay) AS avg_delay, max(delay) AS max_delay, sum(distance) AS distance FROM flights GROUP BY origin"}),
		stacktest.Request(m, "more", "append", map[string]any{"table": "flights", "rows": []map[string]any{{"id": 9001, "origin": "BOS", "delay": 7, "distance": 200.5}, {"id": 9002, "origin": "ORD", "delay": 300, "distance": 1.25}}}),
		stacktest.Request(m, "fix", "upsert", map[string]any{"table": "flights", "rows": []map[string]any{{"id": 3, "origin": "LAX", "delay": 0, "distance": 10}}}),
		stacktest.Request(m, "late", "update", map[string]any{"table": "flights", "set": map[string]any{"delay": 999}, "where": []map[string]any{{"column": "id", "op": "=", "value": 42}}}),
		stacktest.Request(m, "no-ord", "delete", map[string]any{"table": "flights", "where": []map[string]any{{"column": "origin", "op": "=", "value": "ORD"}}}),
		stacktest.Request(m, "worst", "refresh", map[string]any{"table": "worst", "query": "SELECT id, origin, delay FROM flights WHERE delay > 150"}),
	}
	for _, r := range steps {
		if n := s.SubmitWait(t, r, wait); n.Status != model.StatusApplied {
			t.Fatalf("%s: %s (%s)", r.ID, n.Status, n.Error)
		}
	}
	// One version with an applied, a failed and a cancelled request.
	h.stop(t)
	// The failing request comes last: a failure commits everything before
	// it together with it (failure.go), so the three share one transaction
	// and so one version; first, it would commit alone and a cut could
	// fall between it and the rest.
	mixed := []model.Request{
		stacktest.Request(m, "more-2", "append", map[string]any{"table": "flights", "rows": []map[string]any{{"id": 9003, "origin": "ATL", "delay": 12, "distance": 99}}}),
		stacktest.Request(m, "gone", "delete", map[string]any{"table": "flights", "where": []map[string]any{{"column": "origin", "op": "=", "value": "ATL"}}}),
		stacktest.Request(m, "bad", "append", map[string]any{"table": "nope", "rows": []map[string]any{{"n": 1}}}),
	}
	s.Submit(t, mixed...)
	cancel(t, s, m, "gone")
	h = runConfig(t, s, cfg, nil)
	got := s.Outcomes(t, m, wait, "bad", "more-2", "gone")
	if got["bad"].Status != model.StatusFailed || got["more-2"].Status != model.StatusApplied || got["gone"].Status != model.StatusCancelled {
		t.Fatalf("outcomes %+v", got)
	}
	last := got["more-2"].Version

	rep, err := verify(t, s, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.From != 1 || int64(len(rep.Versions)) != last {
		t.Fatalf("verify: %+v, want OK from version 1 through %d", rep, last)
	}
	mixedV := rep.Versions[len(rep.Versions)-1]
	if mixedV.Replayed != 1 || mixedV.Skipped != 2 {
		t.Errorf("version %d: %d replayed, %d skipped; want 1 and 2 (failed, cancelled)", mixedV.Version, mixedV.Replayed, mixedV.Skipped)
	}
	tables := map[string]bool{}
	for _, tv := range mixedV.Tables {
		tables[tv.Table] = tv.Status == "ok"
	}
	if !tables["flights"] || !tables["by_origin"] || !tables["worst"] {
		t.Errorf("tables compared in version %d: %+v", mixedV.Version, mixedV.Tables)
	}

	// Edit the live file directly, then cut a version through a request.
	h.stop(t)
	live, err := duck.Open(ctx, filepath.Join(s.DataDir, m, m+".duckdb"), duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.ExecContext(ctx, "UPDATE flights SET delay = delay + 1 WHERE id = 17"); err != nil {
		t.Fatal(err)
	}
	live.Close()
	h = runConfig(t, s, cfg, nil)
	edited := s.SubmitWait(t, appendRowTo(m, "after-edit", 9100), wait).Version
	rep, err = verify(t, s, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := rep.Versions[len(rep.Versions)-1]
	if rep.OK || bad.Version != edited || bad.Status != "diff" || !strings.Contains(bad.Diff, "table flights") {
		t.Fatalf("verify after the edit: %+v; want a difference in table flights of version %d", rep, edited)
	}
	// From the edited version on, the log explains the model again.
	next := s.SubmitWait(t, appendRowTo(m, "next", 9101), wait).Version
	if rep, err = verify(t, s, m, next); err != nil || !rep.OK || rep.From != next || len(rep.Versions) != 1 {
		t.Fatalf("verify --from-version %d: %+v, %v", next, rep, err)
	}
	if rep, err = verify(t, s, m, edited); err != nil || rep.OK || rep.Versions[0].Version != edited {
		t.Fatalf("verify --from-version %d: %+v, %v; want the difference", edited, rep, err)
	}

	// A staged payload deleted: version 2 (the file append) cannot be
	// replayed; the default start is after it.
	if err := s.Store.Delete(ctx, uri); err != nil {
		t.Fatal(err)
	}
	_, err = verify(t, s, m, 1)
	if !errors.Is(err, dbmanager.ErrNotReplayable) || !strings.Contains(err.Error(), "request load") || !strings.Contains(err.Error(), uri) {
		t.Fatalf("verify --from-version 1 without the payload: %v; want not replayable naming request load and %s", err, uri)
	}
	if rep, err = verify(t, s, m, 0); err != nil || rep.From != 3 || !strings.Contains(rep.Start, "request load") {
		t.Fatalf("verify without the payload: from %d (%s), %v; want from version 3", rep.From, rep.Start, err)
	}
	// A request gone from the stream.
	stream, err := s.JS.Stream(ctx, queue.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	v4, err := s.Ctl.GetVersion(ctx, m, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, v4.Lineage.Requests[0].Seq); err != nil {
		t.Fatal(err)
	}
	_, err = verify(t, s, m, 4)
	if !errors.Is(err, dbmanager.ErrNotReplayable) || !strings.Contains(err.Error(), "no longer in the request stream") || !strings.Contains(err.Error(), "request "+v4.Lineage.Requests[0].ID) {
		t.Fatalf("verify --from-version 4 without its request: %v", err)
	}
}

func appendRowTo(m, id string, n int) model.Request {
	return stacktest.Request(m, id, "append", map[string]any{"table": "flights", "rows": []map[string]any{{"id": n, "origin": "SEA", "delay": 1, "distance": 2}}})
}

// TestVerifyNotDeterministic: a refresh whose query calls random() replays
// to other rows; verify names the table not deterministic and the call.
func TestVerifyNotDeterministic(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "dice"}).ID
	run(t, s, m, nil)
	for _, r := range []model.Request{createTable(m, "c"), appendRow(m, "a", 1),
		stacktest.Request(m, "r", "refresh", map[string]any{"table": "roll", "query": "SELECT n, random() AS x FROM t"})} {
		if n := s.SubmitWait(t, r, wait); n.Status != model.StatusApplied {
			t.Fatalf("%s: %s (%s)", r.ID, n.Status, n.Error)
		}
	}
	rep, err := verify(t, s, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := rep.Versions[len(rep.Versions)-1]
	if rep.OK || last.Version != 3 || !strings.Contains(last.Diff, "table roll") || !strings.Contains(last.Diff, "not deterministic") || !strings.Contains(last.Diff, "random()") {
		t.Fatalf("verify: %+v", rep)
	}
}
