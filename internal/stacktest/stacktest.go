// Package stacktest starts the real components a teatree test needs: an
// in-process NATS server with JetStream (sync always), a fresh Postgres
// database (internal/pgtest) with the control tables migrated, and a
// directory object store, with the streams created.
package stacktest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// Stack is one test's set of services.
type Stack struct {
	NATSURL     string
	PostgresURL string
	StoreDir    string
	DataDir     string
	NC          *nats.Conn
	JS          jetstream.JetStream
	Ctl         *controldb.DB
	Store       objstore.Store
	// Client is a client.Client over NC, Ctl and Store, its cache in a
	// temporary directory.
	Client *client.Client
}

// New starts a stack for t; everything is torn down by t.Cleanup. cfg sets
// the stream limits (zero: defaults).
func New(t testing.TB, cfg queue.Config) *Stack {
	t.Helper()
	ctx := context.Background()
	s := &Stack{NATSURL: natsembed.StartTest(t), PostgresURL: pgtest.NewDatabase(t)}
	dir := t.TempDir()
	s.StoreDir, s.DataDir = filepath.Join(dir, "objects"), filepath.Join(dir, "models")
	var err error
	if s.NC, s.JS, err = queue.Connect(s.NATSURL, t.Name()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.NC.Close)
	if err := queue.EnsureStreams(ctx, s.JS, cfg); err != nil {
		t.Fatal(err)
	}
	if s.Ctl, err = controldb.Open(ctx, s.PostgresURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Ctl.Close)
	if err := s.Ctl.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.StoreDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if s.Store, err = objstore.NewDir(s.StoreDir); err != nil {
		t.Fatal(err)
	}
	if s.Client, err = client.New(client.Options{JetStream: s.JS, Control: s.Ctl, Store: s.Store, CacheDir: filepath.Join(dir, "cache")}); err != nil {
		t.Fatal(err)
	}
	return s
}

// Logger returns a logger that writes to the test log (or discards with
// -short... always to t.Log when verbose).
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// CreateModel creates model id owning the requests published from now on.
func (s *Stack) CreateModel(t testing.TB, m controldb.Model) controldb.Model {
	t.Helper()
	ctx := context.Background()
	last, err := queue.StreamLastSeq(ctx, s.JS)
	if err != nil {
		t.Fatal(err)
	}
	m.StartSeq = last + 1
	got, err := s.Ctl.CreateModel(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Request builds a request with a generated id.
func Request(m, id, function string, args any) model.Request {
	data, err := json.Marshal(args)
	if err != nil {
		panic(err)
	}
	return model.Request{ID: id, Model: m, Function: function, Args: data}
}

// Submit publishes requests in order as they are, and fails the test on
// error. It does not check them (client.Submit does): tests submit what a
// client would refuse, to see the server refuse it.
func (s *Stack) Submit(t testing.TB, reqs ...model.Request) {
	t.Helper()
	for _, r := range reqs {
		if _, err := queue.Publish(context.Background(), s.JS, r, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// Outcomes waits until every id in ids has a final notification on model m
// (reading the notify stream from its start) and returns them by id.
func (s *Stack) Outcomes(t testing.TB, m string, timeout time.Duration, ids ...string) map[string]model.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sub, err := s.Client.Watch(ctx, m, notify.Start{All: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[string]model.Notification{}
	for len(got) < len(want) {
		n, err := sub.Next(ctx)
		if err != nil {
			missing := []string{}
			for id := range want {
				if _, ok := got[id]; !ok {
					missing = append(missing, id)
				}
			}
			t.Fatalf("waiting for notifications: %v; missing %d: %.10v", err, len(missing), missing)
		}
		if want[n.RequestID] && n.Status.Final() {
			if prev, dup := got[n.RequestID]; dup {
				t.Errorf("request %s notified twice: %+v and %+v", n.RequestID, prev, n)
			}
			got[n.RequestID] = n
		}
	}
	return got
}

// SubmitWait submits r with client.Submit and returns its final
// notification (client.Wait, within timeout); it fails the test on error.
func (s *Stack) SubmitWait(t testing.TB, r model.Request, timeout time.Duration) model.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rc, err := s.Client.Submit(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Client.Wait(ctx, rc)
	if err != nil {
		t.Fatalf("waiting for request %s: %v", r.ID, err)
	}
	return n
}

// IDs returns n request ids prefix-0 … prefix-(n-1).
func IDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return ids
}

// AllNotifications returns every notification the notify stream holds for
// model m, in stream order.
func (s *Stack) AllNotifications(t testing.TB, m string) []model.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.JS.Stream(ctx, queue.NotifyStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(queue.NotifySubject(m)))
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.Subjects[queue.NotifySubject(m)]
	sub, err := s.Client.Watch(ctx, m, notify.Start{All: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	out := make([]model.Notification, 0, n)
	for uint64(len(out)) < n {
		note, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("reading %d notifications of %s: %v", n, m, err)
		}
		out = append(out, note)
	}
	return out
}

// PublishVersion makes version n of model m from a real DuckDB file with
// one table t (id BIGINT 0…rows-1, v VARCHAR 'v<n>'), stored in the object store and recorded in
// Postgres as a db-manager would (epoch 1).
func (s *Stack) PublishVersion(t testing.TB, m string, n int64, rows int) controldb.Version {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "snap.duckdb")
	db, err := duck.Open(ctx, path, duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("CREATE TABLE t AS SELECT range AS id, 'v%d' AS v FROM range(%d)", n, rows)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	sum, size, err := snapshot.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("models/%s/versions/%d/snapshot.duckdb", m, n)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Store.Put(ctx, key, f, size); err != nil {
		t.Fatal(err)
	}
	if err := s.Ctl.ClaimEpoch(ctx, m, 1); err != nil {
		t.Fatal(err)
	}
	v := controldb.Version{Model: m, Version: n, SnapshotURI: key, SHA256: sum, Bytes: size, Epoch: 1, Created: time.Now(),
		Tables: []controldb.Table{{Name: "t", ParquetURI: fmt.Sprintf("models/%s/tables/t/%d.parquet", m, n), SHA256: sum, Rows: int64(rows), Schema: json.RawMessage(`{}`)}}}
	if err := s.Ctl.PublishVersion(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	return v
}

// SyncBuffer is a bytes.Buffer safe for a writer and a reader goroutine:
// a process's output or a logger's, read by the test while it runs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
