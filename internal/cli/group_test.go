//go:build duckdb_arrow

package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// TestQueryGroup: teactl model create --group puts models in a group,
// teactl model list shows it, and teactl query --group answers through a
// reader over the union of the members' latest versions (the same as one
// query over the union of their rows), naming the members' versions on
// stderr; a member without a version fails the query with its name, and
// --partial leaves it out; without a reader (or --local) the pulled
// snapshots give the same result.
func TestQueryGroup(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	env := stackEnv(t, s)
	sizes := []int{300, 1700, 2500}
	var union []string
	for i, n := range sizes {
		m := fmt.Sprintf("shard-%d", i)
		if _, errOut, code := teactl(t, ctx, env, "model", "create", m, "--group", "shards"); code != 0 {
			t.Fatalf("model create %s: exit %d: %s", m, code, errOut)
		}
		newBlockModel(t, s, m, n).publish("")
		union = append(union, fmt.Sprintf("SELECT range AS id, 'name-' || (range %% 1000) AS v FROM range(%d)", n))
	}
	out, _, code := teactl(t, ctx, env, "model", "list")
	if code != 0 || !strings.Contains(out, "GROUP") || strings.Count(out, "shards") != len(sizes) {
		t.Errorf("model list (exit %d) does not show the group of each member:\n%s", code, out)
	}
	const agg = "count(*) AS n, sum(id) AS s, avg(id) AS a, min(v) AS lo, max(id) AS hi, count(DISTINCT v) AS d, median(id) AS med"
	q := "SELECT " + agg + " FROM t"

	// The expected result: the same aggregates over the union of the rows,
	// rendered by the same path.
	want, errOut, code := teactl(t, ctx, env, "query", "shard-0", "SELECT "+agg+" FROM ("+strings.Join(union, " UNION ALL ")+")", "--format", "csv")
	if code != 0 {
		t.Fatalf("union query: exit %d: %s", code, errOut)
	}
	// Without a reader, on the pulled snapshots; then through a reader and
	// with --local: the same.
	for _, step := range []string{"no reader", "reader", "--local"} {
		args := []string{"query", "--group", "shards", q, "--format", "csv"}
		switch step {
		case "reader":
			startReader(t, s, 0)
		case "--local":
			args = append(args, "--local")
		}
		got, errOut, code := teactl(t, ctx, env, args...)
		if code != 0 {
			t.Fatalf("%s: group query: exit %d: %s", step, code, errOut)
		}
		if got != want {
			t.Errorf("%s: group query printed\n%s\nwant (the union)\n%s", step, got, want)
		}
		if !strings.Contains(errOut, "group shards: shard-0@1 shard-1@1 shard-2@1") {
			t.Errorf("%s: stderr %q does not list the members' versions", step, errOut)
		}
	}
	if n := readerRequests(t, s, "group"); n != 1 {
		t.Errorf("the reader answered %d requests, want 1 (the group query)", n)
	}

	// --fan-out: one partial per member through the reader, merged here:
	// the same result for the aggregates that merge; median is refused.
	const mergeable = "count(*) AS n, sum(id) AS s, avg(id) AS a, min(v) AS lo, max(id) AS hi, count(DISTINCT v) AS d"
	wantMerged, errOut, code := teactl(t, ctx, env, "query", "shard-0", "SELECT "+mergeable+" FROM ("+strings.Join(union, " UNION ALL ")+")", "--format", "csv")
	if code != 0 {
		t.Fatalf("union query: exit %d: %s", code, errOut)
	}
	got, errOut, code := teactl(t, ctx, env, "query", "--group", "shards", "--fan-out", "SELECT "+mergeable+" FROM t", "--format", "csv")
	if code != 0 || got != wantMerged || !strings.Contains(errOut, "group shards: shard-0@1 shard-1@1 shard-2@1") {
		t.Errorf("--fan-out: exit %d, printed\n%s\nstderr %q; want (the union)\n%s", code, got, errOut, wantMerged)
	}
	if n := readerRequests(t, s, "query"); n != 1+2*len(sizes) {
		t.Errorf("the reader answered %d model queries, want %d (the union, then a schema probe and a partial per member)", n, 1+2*len(sizes))
	}
	if _, errOut, code := teactl(t, ctx, env, "query", "--group", "shards", "--fan-out", q); code == 0 || !strings.Contains(errOut, "median does not merge") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("--fan-out with median: exit %d, %q: want one line saying median does not merge", code, errOut)
	}

	// A member without a published version.
	if _, errOut, code := teactl(t, ctx, env, "model", "create", "shard-new", "--group", "shards"); code != 0 {
		t.Fatalf("model create: %s", errOut)
	}
	for _, extra := range [][]string{nil, {"--local"}} {
		if _, errOut, code := teactl(t, ctx, env, append([]string{"query", "--group", "shards", q}, extra...)...); code == 0 || !strings.Contains(errOut, "member shard-new") {
			t.Errorf("%v member without a version: exit %d, %q: want a failure naming shard-new", extra, code, errOut)
		}
		got, errOut, code := teactl(t, ctx, env, append([]string{"query", "--group", "shards", q, "--format", "csv", "--partial"}, extra...)...)
		if code != 0 || got != want || !strings.Contains(errOut, "left out shard-new") {
			t.Errorf("%v --partial: exit %d, printed\n%s\nstderr %q: want the union of the others, shard-new left out", extra, code, got, errOut)
		}
	}
	// Taken out of the group, it no longer fails the query.
	if _, errOut, code := teactl(t, ctx, env, "model", "group", "shard-new"); code != 0 {
		t.Fatalf("model group: %s", errOut)
	}
	if got, errOut, code := teactl(t, ctx, env, "query", "--group", "shards", q, "--format", "csv"); code != 0 || got != want {
		t.Errorf("after model group shard-new: exit %d: %s%s", code, got, errOut)
	}

	// Bad input: one clear error each.
	for _, args := range [][]string{
		{"query", "--group", "Bad.Name", q},
		{"query", "--group", "shards", q, "--version", "1"},
		{"query", "shard-0", q, "--partial"},
		{"query", "shard-0", q, "--fan-out"},
		{"query", "--group", "shards", q, "--fan-out", "--local"},
		{"model", "create", "x", "--group", "no_underscores"},
	} {
		if _, errOut, code := teactl(t, ctx, env, args...); code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, %q: want one error line", args, code, errOut)
		}
	}
}
