//go:build duckdb_arrow

package reader

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// groupQuery is the query over a group, median included, ordered
// so that two results compare row by row.
const groupQuery = `SELECT origin, count(*) AS n, avg(delay) AS avg_delay, min(delay) AS min_delay, max(delay) AS max_delay,
	count(DISTINCT dest) AS dests, median(delay) AS median_delay, sum(delay) AS total FROM flights GROUP BY origin ORDER BY origin`

// flightRows are the rows of member k: different counts, origins shared
// in part, NULL delays.
func flightRows(k int) []map[string]any {
	var rows []map[string]any
	for i := 0; i < 150+70*k; i++ {
		var delay any = (i*(k+3))%97 - 10
		if i%13 == k {
			delay = nil
		}
		rows = append(rows, map[string]any{"origin": fmt.Sprintf("A%d", (i*7+k)%(4+k)), "dest": fmt.Sprintf("D%d", (i*3+k)%11), "delay": delay})
	}
	return rows
}

// flightsGroup makes models flights-0..flights-<n-1> in group "flights",
// member k holding flightRows(k) in table flights, and returns each
// member's version.
func flightsGroup(t *testing.T, s *stacktest.Stack, n int) map[string]int64 {
	t.Helper()
	versions := map[string]int64{}
	for k := 0; k < n; k++ {
		m := fmt.Sprintf("flights-%d", k)
		s.CreateModel(t, controldb.Model{ID: m, Group: "flights"})
		runManager(t, s, m)
		s.Submit(t,
			stacktest.Request(m, m+"-create", "create_table", map[string]any{"table": "flights", "columns": []map[string]string{{"name": "origin", "type": "VARCHAR"}, {"name": "dest", "type": "VARCHAR"}, {"name": "delay", "type": "INTEGER"}}}),
			stacktest.Request(m, m+"-rows", "append", map[string]any{"table": "flights", "rows": flightRows(k)}))
		out := s.Outcomes(t, m, time.Minute, m+"-rows")[m+"-rows"]
		if out.Status != model.StatusApplied {
			t.Fatalf("append %s: %+v", m, out)
		}
		versions[m] = out.Version
	}
	return versions
}

// unionResult runs q, rendered as csv, on one DuckDB table holding the
// rows of members 0..n-1.
func unionResult(t *testing.T, n int, q string) [][]string {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE flights (origin VARCHAR, dest VARCHAR, delay INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < n; k++ {
		for _, r := range flightRows(k) {
			if _, err := db.Exec(`INSERT INTO flights VALUES (?, ?, ?)`, r["origin"], r["dest"], r["delay"]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return textRows(t, db, RenderSQL(q, "csv"))
}

// textRows runs q, a query of VARCHAR columns, on db.
func textRows(t *testing.T, db *sql.DB, q string) [][]string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]string
	for rows.Next() {
		vals := make([]*string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, strs(vals))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func strs(vals []*string) []string {
	row := make([]string, len(vals))
	for i, v := range vals {
		row[i] = "NULL"
		if v != nil {
			row[i] = *v
		}
	}
	return row
}

// readRendered reads a result of VARCHAR columns (Render csv).
func readRendered(t *testing.T, res *Result) [][]string {
	t.Helper()
	var out [][]string
	for res.Next() {
		rec := res.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			vals := make([]*string, rec.NumCols())
			for j := range vals {
				col := rec.Column(j).(*array.String)
				if col.IsValid(i) {
					v := col.Value(i)
					vals[j] = &v
				}
			}
			out = append(out, strs(vals))
		}
	}
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGroupQueryUnion: a group query answers over the union of its
// members' latest versions exactly as DuckDB does on one table holding
// the union (count, avg, min, max, count(DISTINCT), median, sum; NULL
// delays), and reports every member's version.
func TestGroupQueryUnion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	versions := flightsGroup(t, s, 3)
	startReader(t, s, Config{})
	ctx := context.Background()

	res, err := QueryGroup(ctx, s.NC, "flights", groupQuery, Options{Render: "csv"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	got := readRendered(t, res)
	want := unionResult(t, 3, groupQuery)
	if len(want) < 4 {
		t.Fatalf("the union has %d groups: the test data is too small", len(want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("group result differs from the union's (-want +got):\n%s", diff)
	}
	var wantMembers []Member
	for k := 0; k < 3; k++ {
		m := fmt.Sprintf("flights-%d", k)
		wantMembers = append(wantMembers, Member{Model: m, Version: versions[m]})
	}
	if diff := cmp.Diff(wantMembers, res.Members); diff != "" || res.Group != "flights" || len(res.Failed) != 0 {
		t.Errorf("group %q members (-want +got):\n%s failed %v", res.Group, diff, res.Failed)
	}

	// A single member's data is not the union's: the test sees the union.
	one, err := Query(ctx, s.NC, "flights-0", "SELECT count(*)::BIGINT FROM flights", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, n := collect(t, one); n != int64(len(flightRows(0))) {
		t.Errorf("flights-0 has %d rows, want %d", n, len(flightRows(0)))
	}

	// A group no model belongs to, a version, a bad group name.
	if _, err := QueryGroup(ctx, s.NC, "nobody", "SELECT 1", Options{}); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unknown group: %v, want ErrNotFound", err)
	}
	if _, err := QueryGroup(ctx, s.NC, "flights", "SELECT 1", Options{Version: 1}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("group with a version: %v, want ErrInvalid", err)
	}
	if _, err := QueryGroup(ctx, s.NC, "Bad.Group", "SELECT 1", Options{}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("bad group name: %v, want ErrInvalid", err)
	}
}

// TestGroupQueryFailingMember: a member without a published version fails
// the query with its name; partial leaves it out, lists it, and answers
// over the others.
func TestGroupQueryFailingMember(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	versions := flightsGroup(t, s, 2)
	s.CreateModel(t, controldb.Model{ID: "flights-empty", Group: "flights"})
	startReader(t, s, Config{})
	ctx := context.Background()

	_, err := QueryGroup(ctx, s.NC, "flights", groupQuery, Options{})
	if err == nil || !strings.Contains(err.Error(), "member flights-empty") || !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("error %v, want one naming member flights-empty (not found)", err)
	}

	res, err := QueryGroup(ctx, s.NC, "flights", groupQuery, Options{Render: "csv", Partial: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	if diff := cmp.Diff(unionResult(t, 2, groupQuery), readRendered(t, res)); diff != "" {
		t.Errorf("partial result differs from the union of the members that answer (-want +got):\n%s", diff)
	}
	want := []Member{{"flights-0", versions["flights-0"]}, {"flights-1", versions["flights-1"]}}
	if diff := cmp.Diff(want, res.Members); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	if len(res.Failed) != 1 || res.Failed[0].Model != "flights-empty" || !strings.Contains(res.Failed[0].Error, "no published version") {
		t.Errorf("failed %+v, want flights-empty without a published version", res.Failed)
	}
}
