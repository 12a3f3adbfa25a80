package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
)

func newClient(t *testing.T, s *stacktest.Stack) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{JetStream: s.JS, Control: s.Ctl, Store: s.Store, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var createArgs = json.RawMessage(`{"table":"t","columns":[{"name":"id","type":"BIGINT"}]}`)

// TestWaitFindsItsOwnNotificationLater: Wait started after the
// notification was published finds it (a subscription from "now" would
// not), and of two notifications under the request's id it returns the
// one of its own stream sequence; a duplicate submit waits for the
// original's outcome. Wait reads from the time the request stream stored
// the request, however long ago that was, not from a window before the
// call: the start point is the same when Wait is called later.
func TestWaitFindsItsOwnNotificationLater(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	c := newClient(t, s)
	before := time.Now()
	rc, err := c.Submit(ctx, model.Request{ID: "r1", Model: "shop", Function: "create_table", Args: createArgs})
	if err != nil {
		t.Fatal(err)
	}
	if rc.RequestID != "r1" || rc.Model != "shop" || rc.Seq == 0 || rc.Duplicate || rc.Submitted.Before(before) {
		t.Fatalf("receipt %+v", rc)
	}
	// The db-manager's outcome, and a later request under the same id
	// (refused by the dispatcher under its own stream sequence).
	pub := notify.NewPublisher(s.JS)
	for _, n := range []model.Notification{
		{RequestID: "r1", Model: "shop", Function: "create_table", Status: model.StatusRejected, Seq: rc.Seq + 100, Error: "id reused"},
		{RequestID: "r1", Model: "shop", Function: "create_table", Status: model.StatusApplied, Version: 1, Seq: rc.Seq},
	} {
		if err := pub.Publish(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := c.Wait(wctx, rc)
	if err != nil || n.Status != model.StatusApplied || n.Version != 1 || n.Seq != rc.Seq {
		t.Fatalf("Wait: %+v, %v; want applied in version 1 at stream sequence %d", n, err, rc.Seq)
	}
	dup, err := c.Submit(ctx, model.Request{ID: "r1", Model: "shop", Function: "create_table", Args: createArgs})
	if err != nil || !dup.Duplicate || dup.Seq != rc.Seq || !dup.Submitted.IsZero() {
		t.Fatalf("resubmit: %+v, %v; want a duplicate of sequence %d", dup, err, rc.Seq)
	}
	if n, err := c.Wait(wctx, dup); err != nil || n.Status != model.StatusApplied || n.Seq != rc.Seq {
		t.Fatalf("Wait after a duplicate submit: %+v, %v", n, err)
	}

	// The start point is the request's stored time (less the skew), not
	// a window before now: the same one a second later.
	st, err := s.JS.Stream(ctx, queue.RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.GetMsg(ctx, rc.Seq)
	if err != nil {
		t.Fatal(err)
	}
	first, err := client.WaitStart(c, ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	later, err := client.WaitStart(c, ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	want := stored.Time.Add(-client.DefaultClockSkew)
	if !first.Time.Equal(want) || !later.Time.Equal(want) || first.All {
		t.Errorf("Wait starts at %v, then %v; want %v (the request's stored time %v less %v)", first.Time, later.Time, want, stored.Time, client.DefaultClockSkew)
	}
	if first.Time.Before(before.Add(-client.DefaultClockSkew - time.Second)) {
		t.Errorf("Wait starts at %v, before the request was submitted (%v)", first.Time, before)
	}

	// A request the stream no longer holds: every retained notification.
	if err := st.DeleteMsg(ctx, rc.Seq); err != nil {
		t.Fatal(err)
	}
	if start, err := client.WaitStart(c, ctx, rc); err != nil || !start.All {
		t.Errorf("waitStart for a deleted request: %+v, %v; want All", start, err)
	}
	if n, err := c.Wait(wctx, rc); err != nil || n.Status != model.StatusApplied {
		t.Errorf("Wait for a deleted request: %+v, %v", n, err)
	}
}

// TestWaitTimesOut: without a notification Wait returns ctx's error; a
// receipt that names no request is refused.
func TestWaitTimesOut(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	c := newClient(t, s)
	rc, err := c.Submit(ctx, model.Request{Model: "shop", Function: "create_table", Args: createArgs})
	if err != nil {
		t.Fatal(err)
	}
	if model.ValidateRequestID(rc.RequestID) != nil {
		t.Errorf("generated id %q", rc.RequestID)
	}
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := c.Wait(wctx, rc); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait without a notification: %v, want the deadline", err)
	}
	if _, err := c.Wait(ctx, client.Receipt{Model: "shop", RequestID: "x"}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Wait for an empty receipt: %v, want ErrInvalid", err)
	}
	rc.Model = "other"
	if _, err := c.Wait(ctx, rc); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Wait with the wrong model: %v, want ErrInvalid", err)
	}
}

// TestSubmitRefuses: bad input is refused before anything is sent, a
// reused id is a conflict, a client without NATS says so.
func TestSubmitRefuses(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	c := newClient(t, s)
	for _, r := range []model.Request{
		{Model: "Shop", Function: "create_table", Args: createArgs},
		{Model: "shop", Function: "explode", Args: json.RawMessage(`{}`)},
		{Model: "shop", Function: "append", Args: json.RawMessage(`{"rows":[]}`)},
	} {
		if _, err := c.Submit(ctx, r); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("Submit(%s %s %s): %v, want ErrInvalid", r.Model, r.Function, r.Args, err)
		}
	}
	if _, err := c.Submit(ctx, model.Request{ID: "same", Model: "shop", Function: "create_table", Args: createArgs}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, model.Request{ID: "same", Model: "shop", Function: "drop_table", Args: json.RawMessage(`{"table":"t"}`)}); !errors.Is(err, model.ErrConflict) {
		t.Errorf("reused id: %v, want ErrConflict", err)
	}
	bare, err := client.New(client.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Submit(ctx, model.Request{Model: "shop", Function: "create_table", Args: createArgs}); !errors.Is(err, client.ErrNotConfigured) {
		t.Errorf("Submit without NATS: %v, want client.ErrNotConfigured", err)
	}
}

// TestSubmitFileStages: the file is staged under the request's prefix and
// the request references it; a missing file stages nothing.
func TestSubmitFileStages(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	c := newClient(t, s)
	file := filepath.Join(t.TempDir(), "rows.ndjson")
	if err := os.WriteFile(file, []byte("{\"id\":1}\n{\"id\":2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SubmitFile(ctx, "shop", "t", file, client.FileOptions{ID: "f1"})
	if err != nil {
		t.Fatal(err)
	}
	key := model.StagingPrefix("shop", "f1") + "rows.ndjson"
	if _, err := s.Store.Stat(ctx, key); err != nil {
		t.Errorf("staged object %s: %v", key, err)
	}
	st, _ := s.JS.Stream(ctx, queue.RequestStream)
	msg, err := st.GetMsg(ctx, rc.Seq)
	if err != nil {
		t.Fatal(err)
	}
	r, err := model.DecodeRequest(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	var args struct {
		Table   string            `json:"table"`
		Payload map[string]string `json:"payload"`
	}
	if err := json.Unmarshal(r.Args, &args); err != nil || args.Table != "t" || args.Payload["uri"] != key || r.Function != "append" {
		t.Errorf("queued request %s %s, %v", r.Function, r.Args, err)
	}
	if _, err := c.SubmitFile(ctx, "shop", "t", filepath.Join(t.TempDir(), "nope.csv"), client.FileOptions{ID: "f2"}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("missing file: %v, want ErrInvalid", err)
	}
	if infos, _ := s.Store.List(ctx, model.StagingPrefix("shop", "f2")); len(infos) != 0 {
		t.Errorf("a missing file staged %v", infos)
	}
}

// TestVersionsPullQuery: Versions lists a published version, Pull writes
// and verifies its snapshot, Query reads it; a missing model and version
// are ErrNotFound, a tampered snapshot client.ErrCorrupt.
func TestVersionsPullQuery(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 5})
	c := newClient(t, s)
	if vs, err := c.Versions(ctx, "shop", false); err != nil || len(vs) != 0 {
		t.Fatalf("Versions before any: %v, %v", vs, err)
	}
	v := s.PublishVersion(t, "shop", 1, 3)
	vs, err := c.Versions(ctx, "shop", false)
	if err != nil || len(vs) != 1 || vs[0].Version != 1 {
		t.Fatalf("Versions: %+v, %v", vs, err)
	}
	if _, err := c.Versions(ctx, "nosuch", false); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Versions of a missing model: %v", err)
	}
	if _, err := c.Version(ctx, "shop", 9); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Version 9: %v", err)
	}
	out := filepath.Join(t.TempDir(), "shop.duckdb")
	p, err := c.Pull(ctx, v, out)
	if err != nil || p.Path != out || p.Version != 1 || p.Fetched != v.Bytes {
		t.Fatalf("Pull: %+v, %v", p, err)
	}
	rows, err := c.Query(ctx, "shop", 0, "SELECT count(*), max(id) FROM t WHERE id >= ?", 1)
	if err != nil {
		t.Fatal(err)
	}
	var count, maxID int64
	for rows.Next() {
		if err := rows.Scan(&count, &maxID); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Close(); err != nil || count != 2 || maxID != 2 {
		t.Errorf("Query: count %d max %d, %v; want 2 and 2", count, maxID, err)
	}
	if _, err := c.Query(ctx, "shop", 0, "DELETE FROM t"); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Query of a DELETE: %v, want ErrInvalid", err)
	}
	// Tamper with the stored snapshot: Pull refuses and leaves out alone.
	if err := os.WriteFile(filepath.Join(s.StoreDir, filepath.FromSlash(v.SnapshotURI)), []byte("not a snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pull(ctx, v, out); !errors.Is(err, client.ErrCorrupt) {
		t.Errorf("Pull of a tampered snapshot: %v, want client.ErrCorrupt", err)
	}
	if rows, err := c.Query(ctx, "shop", 1, "SELECT count(*) FROM t"); err != nil {
		t.Errorf("Query from the cache after tampering: %v", err)
	} else {
		rows.Close()
	}
}
