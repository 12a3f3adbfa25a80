//go:build duckdb_arrow

package reader

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// fanOutQueries are the queries the fan-out path merges, each compared
// with DuckDB on one table holding the union; sorted: the rows are
// compared as a multiset (the query's order has ties).
var fanOutQueries = []struct {
	sql    string
	sorted bool
}{
	{sql: `SELECT origin, count(*) AS n, count(delay) AS nd, sum(delay) AS s, min(delay) AS lo, max(delay) AS hi, avg(delay) AS a,
		count(DISTINCT dest) AS dests, sum(DISTINCT delay) AS sd, avg(DISTINCT delay) AS ad, mean(delay) AS m FROM flights GROUP BY origin ORDER BY origin`},
	// No group: one row, also when no row matches (count 0, NULL sums).
	{sql: `SELECT count(*), sum(delay), avg(delay), min(dest), count(DISTINCT dest) FROM flights WHERE delay > 1000`},
	{sql: `SELECT count(*) AS n, sum(delay) AS s, avg(delay) AS a FROM flights`},
	// FILTER, GROUP BY ALL, ORDER BY an aggregate, LIMIT.
	{sql: `SELECT dest, count(*) FILTER (WHERE delay > 20) AS late, max(delay) AS hi FROM flights GROUP BY ALL ORDER BY late DESC, dest LIMIT 4`},
	// A group key the select list lacks; ties.
	{sql: `SELECT count(*) AS n, max(delay) AS hi FROM flights GROUP BY origin, dest ORDER BY n`, sorted: true},
	// An expression of a key, positions, an ORDER BY repeating a select item.
	{sql: `SELECT lower(origin) AS o, avg(delay) FROM flights GROUP BY origin ORDER BY 2 DESC, 1`},
	{sql: `SELECT origin, sum(delay) FROM flights WHERE dest <> 'D3' GROUP BY 1 ORDER BY sum(delay), origin`},
	// Rows gathered: each member's top 5, then the top 5 of the union.
	{sql: `SELECT origin, dest, delay FROM flights WHERE delay > 70 ORDER BY delay DESC, origin, dest LIMIT 5`},
	{sql: `SELECT DISTINCT dest FROM flights ORDER BY dest`},
}

// TestFanOutMerge: a fan-out query over a group, its partials spread over
// two readers, gives DuckDB's result on one table holding the union, for
// every mergeable aggregate with NULLs and groups empty in some members;
// a member without the table adds nothing; a failing member fails the
// query with its name, or is left out with Partial; aggregates that do
// not merge are refused naming them.
func TestFanOutMerge(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	versions := flightsGroup(t, s, 3)
	s.CreateModel(t, controldb.Model{ID: "flights-other", Group: "flights"})
	runManager(t, s, "flights-other")
	s.Submit(t, stacktest.Request("flights-other", "other-create", "create_table",
		map[string]any{"table": "other", "columns": []map[string]string{{"name": "x", "type": "INTEGER"}}}))
	other := s.Outcomes(t, "flights-other", time.Minute, "other-create")["other-create"].Version
	r1, r2 := startReader(t, s, Config{}), startReader(t, s, Config{})
	ctx := context.Background()
	members := []string{"flights-0", "flights-1", "flights-2", "flights-other"}

	for _, q := range fanOutQueries {
		f, err := QueryFanOut(ctx, s.NC, members, q.sql, Options{})
		if err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
		got := renderFanOut(t, f)
		want := unionResult(t, 3, q.sql)
		if q.sorted {
			slices.SortFunc(got, slices.Compare)
			slices.SortFunc(want, slices.Compare)
		}
		if !sameCells(want, got) {
			t.Errorf("%s:\nfan-out %v\nunion   %v", q.sql, got, want)
		}
		wantMembers := []Member{{"flights-0", versions["flights-0"]}, {"flights-1", versions["flights-1"]}, {"flights-2", versions["flights-2"]}, {"flights-other", other}}
		if !slices.Equal(wantMembers, f.Members) || len(f.Failed) != 0 {
			t.Errorf("members %v failed %v, want %v", f.Members, f.Failed, wantMembers)
		}
		f.Close()
	}
	// The partials were spread over both readers (queue group): 2 × 4
	// requests per query, 9 queries.
	if len(r1.Stats().Versions) == 0 || len(r2.Stats().Versions) == 0 {
		t.Errorf("versions opened: %v and %v: one reader answered every partial", r1.Stats().Versions, r2.Stats().Versions)
	}

	for _, bad := range []struct{ sql, says string }{
		{"SELECT origin, median(delay) FROM flights GROUP BY origin", "median does not merge"},
		{"SELECT origin, sum(delay) / count(*) FROM flights GROUP BY origin", "expression over an aggregate (sum)"},
		{"SELECT origin, count(*) FROM flights GROUP BY origin HAVING count(*) > 3", "HAVING"},
		{"SELECT a.origin, count(*) FROM flights a JOIN flights b USING (dest) GROUP BY 1", "FROM must name one table"},
		{"WITH f AS (SELECT * FROM flights) SELECT count(*) FROM f", "WITH"},
		{"SELECT origin, rank() OVER (ORDER BY origin) FROM flights", "window"},
		{"SELECT origin FROM flights ORDER BY delay", "ORDER BY"},
		{"SELECT origin, count(*) FROM flights GROUP BY ROLLUP (origin)", "ROLLUP"},
	} {
		_, err := QueryFanOut(ctx, s.NC, members, bad.sql, Options{})
		if !errors.Is(err, ErrNotMergeable) || !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), bad.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line saying %q (ErrNotMergeable)", bad.sql, err, bad.says)
		}
	}

	// A member without a published version.
	s.CreateModel(t, controldb.Model{ID: "flights-empty", Group: "flights"})
	withEmpty := append(slices.Clone(members), "flights-empty")
	q := fanOutQueries[0].sql
	if _, err := QueryFanOut(ctx, s.NC, withEmpty, q, Options{}); err == nil || !strings.Contains(err.Error(), "member flights-empty") || !errors.Is(err, model.ErrNotFound) {
		t.Errorf("error %v, want one naming member flights-empty (not found)", err)
	}
	f, err := QueryFanOut(ctx, s.NC, withEmpty, q, Options{Partial: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := renderFanOut(t, f); !sameCells(unionResult(t, 3, q), got) {
		t.Errorf("partial fan-out differs from the union of the members that answer: %v", got)
	}
	if len(f.Failed) != 1 || f.Failed[0].Model != "flights-empty" || !strings.Contains(f.Failed[0].Error, "no published version") {
		t.Errorf("failed %+v, want flights-empty without a published version", f.Failed)
	}
}

// renderFanOut reads f's result rendered as csv (as teactl prints it).
func renderFanOut(t *testing.T, f *FanOut) [][]string {
	t.Helper()
	return textRows(t, f.DB, RenderSQL(f.SQL, "csv"))
}

// sameCells: equal text, or numbers within a relative 1e-9 (a sum of
// floating values added in another order).
func sameCells(want, got [][]string) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if len(want[i]) != len(got[i]) {
			return false
		}
		for j := range want[i] {
			w, g := want[i][j], got[i][j]
			if w == g {
				continue
			}
			wf, err1 := strconv.ParseFloat(w, 64)
			gf, err2 := strconv.ParseFloat(g, 64)
			if err1 != nil || err2 != nil || math.Abs(wf-gf) > 1e-9*math.Max(math.Abs(wf), math.Abs(gf)) {
				return false
			}
		}
	}
	return true
}
