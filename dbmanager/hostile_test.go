package dbmanager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
)

// noRunner lets a dispatcher validate and announce rejects while the test
// runs the db-manager itself.
type noRunner struct{}

func (noRunner) Ensure(context.Context, string) error      { return nil }
func (noRunner) Stop(context.Context, string) error        { return nil }
func (noRunner) Running(context.Context) ([]string, error) { return nil, nil }

// hostileRequest is a bad request of the queue test: either a request
// object or raw message bytes, and the outcome it must get.
type hostileRequest struct {
	id   string
	req  *model.Request // nil: publish raw
	raw  []byte
	want model.Status
	msg  string // substring of the notification's error
}

// TestHostileQueueKeepsGoing: a model's queue with many bad requests
// interleaved with good ones, all submitted before the db-manager starts
// (so they share batches): every good request is applied, in submission
// order, each bad one is rejected (by the dispatcher's validation) or
// failed (by the db-manager) with an error naming the problem, and the
// published table holds exactly the good rows.
func TestHostileQueueKeepsGoing(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	m := s.CreateModel(t, controldb.Model{ID: "hostile"}).ID

	dctx, dcancel := context.WithCancel(ctx)
	ddone := make(chan error, 1)
	go func() {
		ddone <- dispatcher.New(dispatcher.Config{UnknownModelGrace: 100 * time.Millisecond}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, noRunner{}).Run(dctx)
	}()
	t.Cleanup(func() {
		dcancel()
		if err := <-ddone; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})

	// Staged payloads: a good Parquet file, one cut short, one that is not
	// Parquet, and a CSV with a ragged row.
	stage := func(id, name string, data []byte) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		key := model.StagingPrefix(m, id) + name
		if err := objstore.PutFile(ctx, s.Store, key, p); err != nil {
			t.Fatal(err)
		}
		return key
	}
	good := parquetBytes(t, `SELECT 1000::BIGINT AS n, 'from parquet' AS v`)
	req := func(id, fn string, args any) *model.Request {
		r := stacktest.Request(m, id, fn, args)
		return &r
	}
	rawArgs := func(id, fn, args string) *model.Request {
		return &model.Request{ID: id, Model: m, Function: fn, Args: json.RawMessage(args)}
	}
	injection := `x'); DROP TABLE t; --`
	bad := []hostileRequest{
		{id: "bad-table", req: rawArgs("bad-table", "append", `{"table":"t; DROP TABLE t","rows":[{"n":1}]}`), want: model.StatusRejected, msg: "not a valid table name"},
		{id: "bad-func", req: rawArgs("bad-func", "truncate", `{"table":"t"}`), want: model.StatusRejected, msg: "unknown function"},
		{id: "bad-sql-off", req: rawArgs("bad-sql-off", "sql", `{"sql":"DELETE FROM t"}`), want: model.StatusRejected, msg: "not enabled"},
		{id: "bad-copy", req: rawArgs("bad-copy", "refresh", `{"table":"d","query":"COPY t TO '/tmp/teatree-leak.csv'"}`), want: model.StatusRejected, msg: "one SELECT statement"},
		{id: "bad-readcsv", req: rawArgs("bad-readcsv", "refresh", `{"table":"d","query":"SELECT * FROM read_csv('/etc/passwd')"}`), want: model.StatusRejected, msg: "read_csv()"},
		{id: "bad-attach", req: rawArgs("bad-attach", "refresh", `{"table":"d","query":"ATTACH '/tmp/x.duckdb' AS x"}`), want: model.StatusRejected, msg: "one SELECT statement"},
		{id: "bad-second", req: rawArgs("bad-second", "refresh", `{"table":"d","query":"SELECT 1 AS x; DROP TABLE t"}`), want: model.StatusRejected, msg: "one SELECT statement"},
		{id: "bad-install", req: rawArgs("bad-install", "refresh", `{"table":"d","query":"INSTALL httpfs"}`), want: model.StatusRejected, msg: "one SELECT statement"},
		{id: "bad-nul", req: rawArgs("bad-nul", "append", `{"table":"t","rows":[{"n\u0000":1}]}`), want: model.StatusRejected, msg: "NUL"},
		{id: "bad-type", req: rawArgs("bad-type", "create_table", `{"table":"w","columns":[{"name":"a","type":"INTEGER); DROP TABLE t; --"}]}`), want: model.StatusRejected, msg: "type"},
		{id: "bad-args-array", req: rawArgs("bad-args-array", "append", `{"table":"t","rows":{"n":1}}`), want: model.StatusRejected, msg: "rows must be an array"},
		{id: "bad-json", raw: []byte(`{"request_id":"bad-json","model":"hostile","function":"append","args":{`), want: model.StatusRejected, msg: "not a JSON object"},
		{id: "bad-other-model", raw: []byte(`{"request_id":"bad-other-model","model":"other","function":"append","args":{"table":"t","rows":[{"n":1}]}}`), want: model.StatusRejected, msg: "names model"},
		{id: "bad-model-name", raw: []byte(`{"request_id":"bad-model-name","model":"a.*>","function":"append","args":{"table":"t","rows":[{"n":1}]}}`), want: model.StatusRejected, msg: "not a DNS label"},
		{id: "bad-big", raw: bigRequest(m, "bad-big"), want: model.StatusRejected, msg: "at most 1048576"},
		{id: "bad-value", req: req("bad-value", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": "not a number"}}}), want: model.StatusFailed, msg: `JSON string "not a number" does not go into`},
		{id: "bad-fraction", req: rawArgs("bad-fraction", "append", `{"table":"t","rows":[{"n":1.5}]}`), want: model.StatusFailed, msg: "not a whole number"},
		{id: "bad-dupkey", req: req("bad-dupkey", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 1}}}), want: model.StatusFailed, msg: "Duplicate key"},
		{id: "bad-column", req: req("bad-column", "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": 99, `v" = 1; DROP TABLE t; --`: "x"}}}), want: model.StatusFailed, msg: "is not a column of table t"},
		{id: "bad-missing", req: req("bad-missing", "append", map[string]any{"table": "nope", "rows": []map[string]any{{"n": 1}}}), want: model.StatusFailed, msg: "does not exist"},
		{id: "bad-refresh", req: rawArgs("bad-refresh", "refresh", `{"table":"d","query":"SELECT * FROM nope"}`), want: model.StatusFailed, msg: "nope"},
		{id: "bad-where", req: rawArgs("bad-where", "delete", `{"table":"t","where":[{"column":"n","op":"=","value":"1 OR 1=1"}]}`), want: model.StatusFailed, msg: "Could not convert"},
		{id: "bad-truncated", req: req("bad-truncated", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": stage("bad-truncated", "f.parquet", good[:len(good)-12])}}), want: model.StatusFailed, msg: `staged file "f.parquet" is not a valid Parquet file`},
		{id: "bad-notparquet", req: req("bad-notparquet", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": stage("bad-notparquet", "f.parquet", []byte("n,v\n1,a\n"))}}), want: model.StatusFailed, msg: `staged file "f.parquet" is not a valid Parquet file`},
		{id: "bad-ragged", req: req("bad-ragged", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": stage("bad-ragged", "f.csv", []byte("n,v\n500,a\n501,b,surplus\n"))}}), want: model.StatusFailed, msg: `staged file "f.csv" is not a valid CSV file`},
		{id: "bad-ragged-new", req: req("bad-ragged-new", "append", map[string]any{"table": "fresh", "payload": map[string]any{"uri": stage("bad-ragged-new", "f.csv", []byte("n,v\n500,a\n501,b,surplus\n"))}}), want: model.StatusFailed, msg: `staged file "f.csv" is not a valid CSV file`},
		{id: "bad-gzip", req: req("bad-gzip", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": stage("bad-gzip", "f.csv.gz", []byte("n,v\n502,a\n"))}}), want: model.StatusFailed, msg: `staged file "f.csv.gz" is not a valid CSV file`},
		{id: "bad-unstaged", req: req("bad-unstaged", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": "staging/hostile/bad-unstaged/absent.parquet"}}), want: model.StatusFailed, msg: "does not exist"},
	}

	// good i appends n = i; bad requests go between them.
	var order []string // submission order of every request id
	goodIDs := []string{"create"}
	s.Submit(t, stacktest.Request(m, "create", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}, "primary_key": []string{"n"}}))
	order = append(order, "create")
	publishRaw := func(id string, data []byte) {
		t.Helper()
		if _, err := s.JS.PublishMsg(ctx, &nats.Msg{Subject: queue.RequestSubject(m), Data: data}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	const goods = 60
	for i := 1; i <= goods; i++ {
		id := fmt.Sprintf("good-%d", i)
		v := fmt.Sprint("row ", i)
		if i%7 == 0 {
			v = injection
		}
		s.Submit(t, stacktest.Request(m, id, "append", map[string]any{"table": "t", "rows": []map[string]any{{"n": i, "v": v}}}))
		goodIDs, order = append(goodIDs, id), append(order, id)
		for j := i - 1; j < len(bad); j += goods { // spread the bad ones out
			b := bad[j]
			if b.req != nil {
				s.Submit(t, *b.req)
			} else {
				publishRaw(b.id, b.raw)
			}
			order = append(order, b.id)
		}
	}
	// The good Parquet file last: a payload append works after bad ones.
	s.Submit(t, stacktest.Request(m, "good-parquet", "append", map[string]any{"table": "t", "payload": map[string]any{"uri": stage("good-parquet", "f.parquet", good)}}))
	goodIDs, order = append(goodIDs, "good-parquet"), append(order, "good-parquet")

	run(t, s, m, nil)
	got := s.Outcomes(t, m, 2*wait, order...)
	var last int64
	for _, id := range goodIDs {
		n := got[id]
		if n.Status != model.StatusApplied {
			t.Errorf("%s: %s (%s), want applied", id, n.Status, n.Error)
		}
		if n.Version < last {
			t.Errorf("%s applied in version %d, after a later request's %d", id, n.Version, last)
		}
		last = max(last, n.Version)
	}
	for _, b := range bad {
		n := got[b.id]
		if n.Status != b.want {
			t.Errorf("%s: %s (%s), want %s", b.id, n.Status, n.Error, b.want)
		}
		if !strings.Contains(n.Error, b.msg) {
			t.Errorf("%s: error %q does not contain %q", b.id, n.Error, b.msg)
		}
	}
	for _, id := range []string{"bad-table", "bad-value", "bad-truncated"} {
		rec, err := s.Ctl.GetRequest(ctx, id)
		if err != nil || rec.Status != got[id].Status || rec.Error == "" {
			t.Errorf("request_log of %s = %+v, %v; want %s with its error", id, rec, err, got[id].Status)
		}
	}
	// The published table holds exactly the good rows, in submission
	// order, the injection stored literally; no table but t was made.
	db, v := latest(t, s, m)
	rows, err := db.Query("SELECT n, v FROM t ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := 1
	for rows.Next() {
		var n int
		var val string
		if err := rows.Scan(&n, &val); err != nil {
			t.Fatal(err)
		}
		switch {
		case want <= goods && n != want:
			t.Fatalf("row %d holds n=%d: applied out of order or a bad request wrote", want, n)
		case want <= goods && want%7 == 0 && val != injection:
			t.Errorf("n=%d: v = %q, want the literal %q", n, val, injection)
		case want > goods && (n != 1000 || val != "from parquet"):
			t.Errorf("last row %d, %q, want the Parquet row", n, val)
		}
		want++
	}
	if want-1 != goods+1 {
		t.Errorf("snapshot holds %d rows, want %d", want-1, goods+1)
	}
	var tables int
	db.QueryRow("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main'").Scan(&tables)
	if tables != 1 || len(v.Tables) != 1 {
		t.Errorf("%d tables in the snapshot, %d in the content index; want only t", tables, len(v.Tables))
	}
	if _, err := os.Stat("/tmp/teatree-leak.csv"); err == nil {
		t.Errorf("a refresh wrote /tmp/teatree-leak.csv")
	}
	// Every request notified once.
	count := map[string]int{}
	for _, n := range s.AllNotifications(t, m) {
		count[n.RequestID]++
	}
	for _, id := range order {
		if count[id] != 1 {
			t.Errorf("%s notified %d times", id, count[id])
		}
	}
}

// parquetBytes returns the result of query as a Parquet file.
func parquetBytes(t *testing.T, query string) []byte {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{Threads: 1, MemoryLimit: "128MB", ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := filepath.Join(t.TempDir(), "f.parquet")
	if _, err := db.ExecContext(ctx, "COPY ("+query+") TO "+duck.Literal(p)+" (FORMAT parquet)"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// bigRequest is a request over model.MaxRequestBytes, which teactl and
// queue.Publish refuse to send but a raw publisher can.
func bigRequest(m, id string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"request_id":"` + id + `","model":"` + m + `","function":"append","args":{"table":"t","rows":[{"n":7,"v":"`)
	b.WriteString(strings.Repeat("x", model.MaxRequestBytes))
	b.WriteString(`"}]}}`)
	return b.Bytes()
}
