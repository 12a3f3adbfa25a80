//go:build duckdb_arrow

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/reader"
)

// startReader runs a reader on s until the test ends, with pages of
// pageBytes.
func startReader(t *testing.T, s *stacktest.Stack, pageBytes int) {
	t.Helper()
	cfg := reader.Config{Dir: filepath.Join(t.TempDir(), "reader"), Threads: 1, MemoryLimit: "256MB", PageBytes: pageBytes}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv := reader.New(cfg, stacktest.Logger(t), s.NC, s.Ctl, s.Store)
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
	})
}

// readerRequests is the number of requests the readers on s answered on
// their endpoint name ("query" or "group"; micro's $SRV.STATS).
func readerRequests(t *testing.T, s *stacktest.Stack, name string) int {
	t.Helper()
	msg, err := s.NC.Request("$SRV.STATS."+reader.ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Endpoints []struct {
			Name        string `json:"name"`
			NumRequests int    `json:"num_requests"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatalf("$SRV.STATS %s: %v", msg.Data, err)
	}
	for _, ep := range st.Endpoints {
		if ep.Name == name {
			return ep.NumRequests
		}
	}
	t.Fatalf("$SRV.STATS %s: no %s endpoint", msg.Data, name)
	return 0
}

// TestQueryRemoteSameAsLocal: teactl query through a reader prints, in
// every format, exactly what --local prints from the pulled snapshot, for
// every type and for a result of many pages; without a reader it falls
// back to the snapshot.
func TestQueryRemoteSameAsLocal(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	s.CreateModel(t, controldb.Model{ID: "types", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "types", 10)
	// Table t: one column per type case, a row of the values and a row of
	// NULLs.
	var vals, nulls []string
	for i, tc := range typeCases {
		vals = append(vals, fmt.Sprintf("CAST(%s AS %s) AS c%d", tc.lit, tc.typ, i))
		nulls = append(nulls, fmt.Sprintf("CAST(NULL AS %s)", tc.typ))
	}
	b.exec("CREATE TYPE mood AS ENUM ('sad', 'happy'); DROP TABLE t; CREATE TABLE t AS SELECT " + strings.Join(vals, ", ") + " UNION ALL SELECT " + strings.Join(nulls, ", "))
	b.publish("")
	env := stackEnv(t, s)

	queries := []string{
		"SELECT * FROM t",
		"SELECT range AS id, 'row ' || range AS v, range / 7 AS d FROM range(20000)",
	}
	// No reader yet: the local snapshot answers.
	local := map[string]string{}
	for _, q := range queries {
		for _, f := range []string{"table", "csv", "json"} {
			out, errOut, code := teactl(t, ctx, env, "query", "types", q, "--format", f)
			if code != 0 {
				t.Fatalf("no reader: %s %s: exit %d: %s", q, f, code, errOut)
			}
			local[q+f] = out
		}
	}
	startReader(t, s, 4<<10)
	before := readerRequests(t, s, "query")
	for _, q := range queries {
		for _, f := range []string{"table", "csv", "json"} {
			remote, errOut, code := teactl(t, ctx, env, "query", "types", q, "--format", f)
			if code != 0 {
				t.Fatalf("%s %s: exit %d: %s", q, f, code, errOut)
			}
			forced, errOut, code := teactl(t, ctx, env, "query", "types", q, "--format", f, "--local")
			if code != 0 {
				t.Fatalf("%s %s --local: exit %d: %s", q, f, code, errOut)
			}
			if remote != forced || remote != local[q+f] {
				t.Errorf("%.30s %s: through the reader\n%.2000s\n--local\n%.2000s", q, f, remote, forced)
			}
		}
	}
	if n := readerRequests(t, s, "query") - before; n != 2*3 {
		t.Errorf("the reader answered %d queries, want %d (--local ones excepted)", n, 2*3)
	}
	// A bad query through the reader is the same one-line error as
	// locally.
	_, remoteErr, code := teactl(t, ctx, env, "query", "types", "SELECT nope FROM t")
	_, localErr, localCode := teactl(t, ctx, env, "query", "types", "SELECT nope FROM t", "--local")
	if code == 0 || code != localCode || remoteErr != localErr {
		t.Errorf("bad query: exit %d %q through the reader, %d %q locally", code, remoteErr, localCode, localErr)
	}
	// teactl ping finds the reader; teactl info shows the version it serves.
	out, errOut, code := teactl(t, ctx, env, "ping", "--json")
	if code != 0 {
		t.Fatalf("ping: exit %d: %s", code, errOut)
	}
	var ps []svcinfo.Pinged
	if err := json.Unmarshal([]byte(out), &ps); err != nil || len(ps) != 1 || ps[0].Name != reader.ServiceName {
		t.Fatalf("ping: %v: %s", err, out)
	}
	out, errOut, code = teactl(t, ctx, env, "info", "--json")
	if code != 0 {
		t.Fatalf("info: exit %d: %s", code, errOut)
	}
	var ins []svcinfo.Info
	if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins) != 1 || ins[0].Versions["types"] != 1 || ins[0].LastError == nil {
		t.Errorf("info: %v: want the reader serving version 1 of types, with the bad query as its last error: %s", err, out)
	}
	if out, _, _ := teactl(t, ctx, env, "info"); !strings.Contains(out, reader.ServiceName) || !strings.Contains(out, "types@1") {
		t.Errorf("info table:\n%s", out)
	}
}
