package dbmanager_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
)

// startDispatcher runs a dispatcher that validates and announces rejects
// while the test runs the db-managers itself.
func startDispatcher(t *testing.T, s *stacktest.Stack) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.New(dispatcher.Config{UnknownModelGrace: 100 * time.Millisecond}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, noRunner{}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
}

// stageFile puts data at key in the stack's object store.
func stageFile(t *testing.T, s *stacktest.Stack, key string, data []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := objstore.PutFile(context.Background(), s.Store, key, p); err != nil {
		t.Fatal(err)
	}
}

// staged lists the objects under prefix.
func staged(t *testing.T, s *stacktest.Stack, prefix string) []string {
	t.Helper()
	objs, err := s.Store.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestPayloadBoundToRequest: a request to model m7 that names the payload
// another request staged (for another model, or under another request id
// of its own model, or in the old staging/<request_id>/ form) is rejected
// and reads nothing; the request that staged the payload is applied with
// it, and its payload is deleted once its version is published.
func TestPayloadBoundToRequest(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m7 := s.CreateModel(t, controldb.Model{ID: "m7"}).ID
	zip := s.CreateModel(t, controldb.Model{ID: "zip"}).ID
	startDispatcher(t, s)

	victim := model.StagingPrefix(zip, "victim-1") + "zipcodes.csv"
	stageFile(t, s, victim, []byte("zip,city\n10115,Berlin\n75001,Paris\n"))
	stageFile(t, s, "staging/victim-1/zipcodes.csv", []byte("zip,city\n1,old form\n"))
	steal := func(id, uri string) model.Request {
		return stacktest.Request(m7, id, "append", map[string]any{"table": "stolen", "payload": map[string]any{"uri": uri}})
	}
	thefts := []model.Request{
		steal("thief-1", victim),                             // another model's payload
		steal("thief-2", "staging/m7/victim-1/zipcodes.csv"), // another request's prefix
		steal("thief-3", "staging/victim-1/zipcodes.csv"),    // the old form
		steal("thief-4", "staging/m7/thief-4/../../zip/victim-1/zipcodes.csv"),
	}
	s.Submit(t, thefts...)
	s.Submit(t, stacktest.Request(m7, "m7-ok", "create_table", map[string]any{"table": "own", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}}}))
	s.Submit(t, stacktest.Request(zip, "victim-1", "append", map[string]any{"table": "zips", "payload": map[string]any{"uri": victim}}))
	run(t, s, m7, nil)
	run(t, s, zip, nil)

	got := s.Outcomes(t, m7, wait, "thief-1", "thief-2", "thief-3", "thief-4")
	for _, r := range thefts {
		n := got[r.ID]
		if n.Status != model.StatusRejected || !strings.Contains(n.Error, "staging/m7/"+r.ID+"/") && !strings.Contains(n.Error, "clean object key") {
			t.Errorf("%s: %s (%s), want rejected naming staging/m7/%s/", r.ID, n.Status, n.Error, r.ID)
		}
	}
	if n := s.Outcomes(t, zip, wait, "victim-1")["victim-1"]; n.Status != model.StatusApplied {
		t.Fatalf("the request that staged the payload: %s (%s), want applied", n.Status, n.Error)
	}
	s.Outcomes(t, m7, wait, "m7-ok")
	db, _ := latest(t, s, zip)
	var rows int
	if err := db.QueryRow("SELECT count(*) FROM zips").Scan(&rows); err != nil || rows != 2 {
		t.Errorf("zip.zips holds %d rows (%v), want 2", rows, err)
	}
	db7, v7 := latest(t, s, m7)
	var tables int
	db7.QueryRow("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'stolen'").Scan(&tables)
	if tables != 0 || len(v7.Tables) != 1 {
		t.Errorf("m7 has %d stolen tables, %d tables in all; want only own", tables, len(v7.Tables))
	}
	eventually(t, "the applied request's payload is deleted", func() bool { return len(staged(t, s, model.StagingPrefix(zip, "victim-1"))) == 0 })
}

// TestFailedRequestPayload: a request whose staged file is not what its
// extension says fails with one line naming the file (no server path, no
// DuckDB advice), and its payload is deleted right away; the model goes
// on.
func TestFailedRequestPayload(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "pay"}).ID
	startDispatcher(t, s)
	bad := model.StagingPrefix(m, "bad-1") + "flights.parquet"
	stageFile(t, s, bad, []byte("a,b\n1,2\n"))
	png := model.StagingPrefix(m, "bad-2") + "zipcodes.csv"
	stageFile(t, s, png, []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00\x90\x91h6\x00\x00\x00\x00IEND\xaeB`\x82"))
	s.Submit(t,
		stacktest.Request(m, "bad-1", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": bad}}),
		stacktest.Request(m, "bad-2", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": png}}),
		stacktest.Request(m, "ok-1", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}}}),
	)
	var logs stacktest.SyncBuffer
	cfg := dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
	mgr, err := dbmanager.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("db-manager: %v", err)
		}
	})
	got := s.Outcomes(t, m, wait, "bad-1", "bad-2", "ok-1")
	for id, want := range map[string]string{
		"bad-1": `staged file "flights.parquet" is not a valid Parquet file (format from its extension)`,
		"bad-2": `staged file "zipcodes.csv" is not a valid CSV file (format from its extension)`,
	} {
		n := got[id]
		if n.Status != model.StatusFailed || !strings.Contains(n.Error, want) {
			t.Errorf("%s: %s (%q), want failed with %q", id, n.Status, n.Error, want)
		}
		if strings.ContainsAny(n.Error, "\n\r") || strings.Contains(n.Error, s.DataDir) || strings.Contains(n.Error, "Possible fixes") {
			t.Errorf("%s: the notification's error is not one line without server paths: %q", id, n.Error)
		}
		if left := staged(t, s, model.StagingPrefix(m, id)); len(left) != 0 {
			t.Errorf("%s: staged payload left after the failure: %v", id, left)
		}
	}
	if n := got["ok-1"]; n.Status != model.StatusApplied {
		t.Errorf("ok-1: %s (%s)", n.Status, n.Error)
	}
	// DuckDB's whole message, path and advice included, is in the log.
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "request failed") && strings.Contains(l, "request_id=bad-2") {
			line = l
		}
	}
	if !strings.Contains(line, "duckdb=") || !strings.Contains(line, "Possible fixes") || !strings.Contains(line, filepath.Join(s.DataDir, m)) {
		t.Errorf("the db-manager log lacks DuckDB's detail of bad-2: %q", line)
	}
}
