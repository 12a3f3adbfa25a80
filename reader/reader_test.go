//go:build duckdb_arrow

package reader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// runManager runs a real db-manager for model m on s until the test ends.
func runManager(t *testing.T, s *stacktest.Stack, m string) {
	t.Helper()
	cfg := dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
	mgr, err := dbmanager.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("db-manager did not stop")
		}
	})
}

// startReader runs a reader on s with cfg (Dir filled) until the test
// ends, and returns it once it serves.
func startReader(t *testing.T, s *stacktest.Stack, cfg Config) *Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "reader")
	}
	cfg.Threads, cfg.MemoryLimit = 1, "256MB"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(cfg, stacktest.Logger(t), nc, s.Ctl, s.Store)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("reader: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reader: %v", err)
		}
		nc.Close()
	})
	return srv
}

// shop makes model "shop" with table t(id BIGINT, v VARCHAR) holding rows
// 1..n, each its own request (one or more versions), and returns the
// version that holds them all.
func shop(t *testing.T, s *stacktest.Stack, n int) int64 {
	t.Helper()
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 100})
	runManager(t, s, "shop")
	s.Submit(t, stacktest.Request("shop", "create", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}}))
	return appendRows(t, s, "a", 1, n)
}

// appendRows appends rows from..to of t in one request and returns the
// version it is in.
func appendRows(t *testing.T, s *stacktest.Stack, id string, from, to int) int64 {
	t.Helper()
	var rows []map[string]any
	for i := from; i <= to; i++ {
		rows = append(rows, map[string]any{"id": i, "v": fmt.Sprintf("row %d %s", i, strings.Repeat("x", 50))})
	}
	s.Submit(t, stacktest.Request("shop", id, "append", map[string]any{"table": "t", "rows": rows}))
	n := s.Outcomes(t, "shop", time.Minute, id)[id]
	if n.Status != model.StatusApplied {
		t.Fatalf("append %s: %+v", id, n)
	}
	return n.Version
}

// collect reads a whole result: rows and the sum of column 0.
func collect(t *testing.T, res *Result) (rows, sum int64) {
	t.Helper()
	for res.Next() {
		rec := res.RecordBatch()
		rows += rec.NumRows()
		col := rec.Column(0).(*array.Int64)
		for i := 0; i < col.Len(); i++ {
			sum += col.Value(i)
		}
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	return rows, sum
}

// TestQueryPagesAndVersions: a result larger than a page arrives in
// several pages, whole; a query started on a version finishes there while
// a newer one is published, and the next query sees the newer one.
func TestQueryPagesAndVersions(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	v1 := shop(t, s, 3000)
	srv := startReader(t, s, Config{PageBytes: 16 << 10})
	ctx := context.Background()

	res, err := Query(ctx, s.NC, "shop", "SELECT id, v FROM t ORDER BY id", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != v1 {
		t.Errorf("version %d, want %d", res.Version, v1)
	}
	// Read one batch, then publish a version, then read the rest: the
	// whole result is v1's.
	if !res.Next() {
		t.Fatal(res.Err())
	}
	first := res.RecordBatch().NumRows()
	v2 := appendRows(t, s, "b", 3001, 4000)
	// The reader serves v2 now; the query in flight still reads v1, whose
	// file stays until it ends.
	waitFor(t, func() bool { return srv.Stats().Versions["shop"] == v2 }, "the reader to serve the new version")
	if files, _ := filepath.Glob(filepath.Join(srv.cfg.Dir, "shop", "*"+fileSuffix)); len(files) != 2 {
		t.Errorf("files %v, want v1's (in use) and v2's", files)
	}
	rows, _ := collect(t, res)
	res.Close()
	waitFor(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(srv.cfg.Dir, "shop", "*"+fileSuffix))
		return len(files) == 1
	}, "v1 to close with its last query")
	if rows+first != 3000 {
		t.Errorf("%d rows on version %d, want 3000 (no torn read)", rows+first, v1)
	}
	// 3000 rows of about 70 bytes in pages of 16 KiB.
	if !res.pages.last || res.pages.n < 10 {
		t.Errorf("%d pages, last received %v: want at least 10 pages, all", res.pages.n, res.pages.last)
	}

	// The reader follows the notification: soon a query sees v2.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := Query(ctx, s.NC, "shop", "SELECT count(*)::BIGINT FROM t", Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, n := collect(t, res)
		res.Close()
		if res.Version == v2 {
			if n != 4000 {
				t.Errorf("version %d has %d rows, want 4000", v2, n)
			}
			break
		}
		if n != 3000 {
			t.Fatalf("version %d has %d rows: torn read", res.Version, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader still serves version %d, %d was published", res.Version, v2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// v2 was built from v1's blocks: it fetched less than its size.
	if st := srv.Stats(); st.Reused == 0 || st.Versions["shop"] != v2 {
		t.Errorf("stats %+v: want blocks reused and version %d served", st, v2)
	}
	// A query right after a version is applied sees it (Postgres is asked
	// at the start of each query), notification processed or not.
	v3 := appendRows(t, s, "c", 4001, 4010)
	res, err = Query(ctx, s.NC, "shop", "SELECT count(*)::BIGINT FROM t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, n := collect(t, res); res.Version != v3 || n != 4010 {
		t.Errorf("right after version %d was applied: version %d with %d rows", v3, res.Version, n)
	}
	res.Close()
	// An explicit version is served too.
	res, err = Query(ctx, s.NC, "shop", "SELECT count(*)::BIGINT FROM t", Options{Version: v1})
	if err != nil {
		t.Fatal(err)
	}
	if _, n := collect(t, res); n != 3000 || res.Version != v1 {
		t.Errorf("version %d: %d rows, want version %d with 3000", res.Version, n, v1)
	}
	res.Close()
}

// TestQueryConcurrentWithVersions: many queries run while versions are
// published; each sees one whole version (count = the version's rows).
func TestQueryConcurrentWithVersions(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	shop(t, s, 100)
	startReader(t, s, Config{PageBytes: 4 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				res, err := Query(ctx, s.NC, "shop", "SELECT id FROM t", Options{})
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				var rows, max int64
				for res.Next() {
					col := res.RecordBatch().Column(0).(*array.Int64)
					rows += int64(col.Len())
					for i := 0; i < col.Len(); i++ {
						max = maxOf(max, col.Value(i))
					}
				}
				err = res.Err()
				res.Close()
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				// Every version holds 1..k: rows equal to the largest id.
				if rows != max {
					errs <- fmt.Errorf("version %d: %d rows, largest id %d: torn read", res.Version, rows, max)
					return
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		appendRows(t, s, fmt.Sprintf("c%d", i), 101+i*100, 200+i*100)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func maxOf(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// TestQueryEarlyStopCancels: a client that closes the result after the
// first page makes the reader end the query and release its version.
func TestQueryEarlyStopCancels(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	shop(t, s, 3000)
	// The client timeout is longer than the wait below: only the cancel
	// ends the query in time.
	srv := startReader(t, s, Config{PageBytes: 4 << 10, ClientTimeout: 2 * time.Minute})
	res, err := Query(context.Background(), s.NC, "shop", "SELECT id, v FROM t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Next() {
		t.Fatal(res.Err())
	}
	if srv.Active() != 1 {
		t.Errorf("%d queries active, want 1", srv.Active())
	}
	res.Close()
	start := time.Now()
	waitFor(t, func() bool { return srv.Active() == 0 }, "the reader to end the cancelled query")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the cancelled query ended after %s", d)
	}
	srv.mu.Lock()
	for _, e := range srv.models["shop"].versions {
		if e.ov.refs != 0 {
			t.Errorf("version %d still has %d references", e.ov.v.Version, e.ov.refs)
		}
	}
	srv.mu.Unlock()
}

// TestQueryLimits: rows, bytes and time beyond the limits are each a clear
// error; bad SQL and an unknown model too.
func TestQueryLimits(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	shop(t, s, 3000)
	startReader(t, s, Config{PageBytes: 4 << 10, MaxRows: 2000, MaxBytes: 64 << 10})
	ctx := context.Background()
	cases := []struct {
		name, sql string
		opts      Options
		is        error
		msg       string
	}{
		{"rows", "SELECT id FROM t", Options{}, ErrLimit, "more than 2000 rows"},
		{"rows asked", "SELECT id FROM t", Options{MaxRows: 10}, ErrLimit, "more than 10 rows"},
		{"bytes", "SELECT v FROM t LIMIT 1500", Options{}, ErrLimit, "more than 65536 bytes"},
		{"time", "SELECT count(*) FROM range(100000000000) a", Options{Timeout: 200 * time.Millisecond}, ErrLimit, "longer than 200ms"},
		{"not a select", "DELETE FROM t", Options{}, model.ErrInvalid, "SELECT"},
		{"bad sql", "SELECT nope FROM t", Options{}, model.ErrInvalid, "nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Query(ctx, s.NC, "shop", tc.sql, tc.opts)
			if err == nil {
				for res.Next() {
				}
				err = res.Err()
				res.Close()
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want %v with %q", err, tc.is, tc.msg)
			}
		})
	}
	_, err := Query(ctx, s.NC, "nosuch", "SELECT 1", Options{})
	if !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unknown model: %v, want ErrNotFound", err)
	}
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoReadersAnswerOnce: with two readers on the queue group each
// request is answered by one of them, once; both are found by micro's
// discovery ($SRV.PING, $SRV.INFO).
func TestTwoReadersAnswerOnce(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	shop(t, s, 10)
	startReader(t, s, Config{})
	startReader(t, s, Config{})
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		// A raw request: count every reply message of the query.
		inbox := s.NC.NewRespInbox()
		sub, err := s.NC.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := Request{SQL: "SELECT 1"}.encode()
		if err := s.NC.PublishRequest(Subject("shop"), inbox, body); err != nil {
			t.Fatal(err)
		}
		replies := 0
		for {
			msg, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			if msg.Header.Get(HeaderLast) != "true" {
				t.Fatalf("reply %d is not a last page: %v", replies, msg.Header)
			}
			replies++
		}
		sub.Unsubscribe()
		if replies != 1 {
			t.Fatalf("request %d: %d replies, want 1", i, replies)
		}
		if i == 0 {
			res, err := Query(ctx, s.NC, "shop", "SELECT 1", Options{})
			if err != nil {
				t.Fatal(err)
			}
			res.Close()
		}
	}
	// Discovery: both readers answer $SRV.PING.teatree-reader.
	inbox := s.NC.NewRespInbox()
	sub, err := s.NC.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := s.NC.PublishRequest("$SRV.PING."+ServiceName, inbox, nil); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for {
		msg, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			break
		}
		var ping struct {
			Name string `json:"name"`
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(msg.Data, &ping); err != nil || ping.Name != ServiceName || ping.Type != "io.nats.micro.v1.ping_response" {
			t.Fatalf("ping reply %s: %v", msg.Data, err)
		}
		ids[ping.ID] = true
	}
	if len(ids) != 2 {
		t.Errorf("%d readers answered $SRV.PING, want 2", len(ids))
	}
	// $SRV.INFO lists the query endpoint and its subject.
	msg, err := s.NC.Request("$SRV.INFO."+ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), `"subject":"teatree.query.*"`) || !strings.Contains(string(msg.Data), `"queue_group":"teatree-reader"`) {
		t.Errorf("$SRV.INFO: %s", msg.Data)
	}
}

// TestNoReader: without a reader Query says so at once (NATS no
// responders), which teactl takes to query the local snapshot instead.
func TestNoReader(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	start := time.Now()
	_, err := Query(context.Background(), s.NC, "shop", "SELECT 1", Options{})
	if !errors.Is(err, ErrNoReader) {
		t.Fatalf("error %v, want ErrNoReader", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to find no reader", d)
	}
}

// TestIdleVersionsClose: a model no query used for IdleTimeout is closed
// and its file removed; the next query opens it again.
func TestIdleVersionsClose(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	shop(t, s, 10)
	dir := filepath.Join(t.TempDir(), "reader")
	// A stale version of an earlier run goes at start; other files stay.
	if err := os.MkdirAll(filepath.Join(dir, "shop"), 0o755); err != nil {
		t.Fatal(err)
	}
	stale, other := filepath.Join(dir, "shop", "1-1"+fileSuffix), filepath.Join(dir, "shop", "notes.duckdb")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := startReader(t, s, Config{Dir: dir, IdleTimeout: 300 * time.Millisecond})
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale version %s kept: %v", stale, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("%s removed: %v", other, err)
	}
	for i := 0; i < 2; i++ {
		res, err := Query(context.Background(), s.NC, "shop", "SELECT count(*)::BIGINT FROM t", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, n := collect(t, res); n != 10 {
			t.Errorf("%d rows, want 10", n)
		}
		res.Close()
		files, _ := filepath.Glob(filepath.Join(dir, "shop", "*"+fileSuffix))
		if len(files) != 1 {
			t.Errorf("files %v, want one open version", files)
		}
		// The model is forgotten, then its file removed.
		waitFor(t, func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			files, _ = filepath.Glob(filepath.Join(dir, "shop", "*"+fileSuffix))
			return len(srv.models) == 0 && len(files) == 0
		}, "the idle model to close and its file to go")
	}
}
