package dbmanager_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// derivedDefs are the derived tables of the db-manager tests: one
// maintained incrementally, one recomputed (a join), one over a derived
// table, one whose query casts v to a number (a row whose v is not one
// makes its refresh fail).
var derivedDefs = map[string]string{
	"by_k":    "SELECT n % 5 AS k, count(*) AS c, sum(n) AS s, min(v) AS lo, avg(n) AS mean FROM t GROUP BY ALL",
	"joined":  "SELECT u.tag, count(*) AS c FROM t JOIN u ON t.n % 3 = u.m GROUP BY ALL",
	"top":     "SELECT c, count(*) AS ks FROM by_k GROUP BY ALL",
	"numeric": "SELECT n % 2 AS odd, sum(CAST(v AS DOUBLE)) AS total FROM t GROUP BY ALL",
}

func deriveReq(m, id, table string) model.Request {
	return stacktest.Request(m, id, "derive", map[string]any{"table": table, "query": derivedDefs[table]})
}

func setupDerived(m string) []model.Request {
	return []model.Request{
		stacktest.Request(m, "create-t", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}}),
		stacktest.Request(m, "create-u", "create_table", map[string]any{"table": "u", "columns": []map[string]string{{"name": "m", "type": "BIGINT"}, {"name": "tag", "type": "VARCHAR"}}}),
		stacktest.Request(m, "fill-u", "append", map[string]any{"table": "u", "rows": []map[string]any{{"m": 0, "tag": "zero"}, {"m": 1, "tag": "one"}}}),
		deriveReq(m, "derive-by_k", "by_k"), deriveReq(m, "derive-joined", "joined"),
		deriveReq(m, "derive-top", "top"), deriveReq(m, "derive-numeric", "numeric"),
	}
}

// randomRequests are appends (some with a v that is not a number: they
// fail), updates and deletes of t and appends to u.
func randomRequests(m, prefix string, rng *rand.Rand, n int) (reqs []model.Request, bad map[string]bool) {
	bad = map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		switch k := rng.IntN(10); {
		case k < 6:
			var rows []map[string]any
			for range 1 + rng.IntN(4) {
				rows = append(rows, map[string]any{"n": rng.IntN(1000), "v": fmt.Sprintf("%.3f", rng.Float64()*100)})
			}
			if rng.IntN(8) == 0 {
				rows[0]["v"] = "not a number"
				bad[id] = true
			}
			reqs = append(reqs, stacktest.Request(m, id, "append", map[string]any{"table": "t", "rows": rows}))
		case k == 6:
			reqs = append(reqs, stacktest.Request(m, id, "update", map[string]any{"table": "t", "set": map[string]any{"v": "7"}, "where": []map[string]any{{"column": "n", "op": "<", "value": rng.IntN(200)}}}))
		case k == 7:
			reqs = append(reqs, stacktest.Request(m, id, "delete", map[string]any{"table": "t", "where": []map[string]any{{"column": "n", "op": ">", "value": 900 + rng.IntN(100)}}}))
		default:
			reqs = append(reqs, stacktest.Request(m, id, "append", map[string]any{"table": "u", "rows": []map[string]any{{"m": rng.IntN(3), "tag": fmt.Sprint("tag", rng.IntN(4))}}}))
		}
	}
	return reqs, bad
}

// TestDerivedCurrentInEveryVersion submits random appends, updates and
// deletes to two inputs of four derived tables and checks every published
// version: each derived table equals its query run on that version.
// Appends whose rows break a derived table's query fail with the refresh's
// error; the others of their batch apply.
func TestDerivedCurrentInEveryVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "derived"}).ID
	s.Submit(t, setupDerived(m)...)
	rng := rand.New(rand.NewPCG(3, 4))
	reqs, bad := randomRequests(m, "r", rng, 120)
	s.Submit(t, reqs...)
	run(t, s, m, nil)
	ids := []string{"create-t", "create-u", "fill-u", "derive-by_k", "derive-joined", "derive-top", "derive-numeric"}
	for _, r := range reqs {
		ids = append(ids, r.ID)
	}
	outcomes := s.Outcomes(t, m, wait, ids...)
	for _, id := range ids {
		n := outcomes[id]
		switch {
		case bad[id] && (n.Status != model.StatusFailed || !strings.Contains(n.Error, "derived table numeric")):
			t.Errorf("%s: %s %q, want failed by the refresh of numeric", id, n.Status, n.Error)
		case !bad[id] && n.Status != model.StatusApplied:
			t.Errorf("%s: %s %q, want applied", id, n.Status, n.Error)
		}
	}
	if len(bad) == 0 {
		t.Fatal("no failing append in the random requests")
	}
	checkEveryVersion(t, s, m)
}

// TestDerivedCrashBeforeVersion crashes the db-manager right after the
// commits of batches that changed inputs, before their versions are cut
// or acknowledged; after a restart every version's derived tables still
// equal their queries (the refresh is in the inputs' transaction).
func TestDerivedCrashBeforeVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "derived-crash"}).ID
	s.Submit(t, setupDerived(m)...)
	rng := rand.New(rand.NewPCG(5, 6))
	var all []model.Request
	for round := range 3 {
		reqs, _ := randomRequests(m, fmt.Sprint("c", round), rng, 30)
		all = append(all, reqs...)
		s.Submit(t, reqs...)
		var commits atomic.Int32
		h := run(t, s, m, func(mgr *dbmanager.Manager) {
			mgr.SetCrashAfterCommit(func() bool { return commits.Add(1) == 1 })
		})
		if err := h.wait(t); err == nil {
			t.Fatalf("round %d: the db-manager did not crash", round)
		}
	}
	run(t, s, m, nil)
	ids := []string{"derive-numeric"}
	for _, r := range all {
		ids = append(ids, r.ID)
	}
	s.Outcomes(t, m, wait, ids...)
	checkEveryVersion(t, s, m)
}

// checkEveryVersion opens every published version of m and compares each
// derived table with its query run on that version.
func checkEveryVersion(t *testing.T, s *stacktest.Stack, m string) {
	t.Helper()
	ctx := context.Background()
	vs, err := s.Ctl.ListVersions(ctx, m, false)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, v := range vs {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.duckdb", v.Version))
		if err := versionFile(ctx, s, v, path); err != nil {
			t.Fatal(err)
		}
		db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := db.QueryContext(ctx, "SELECT table_name, query FROM _teatree.derived ORDER BY 1")
		if err != nil {
			db.Close()
			continue // before the first derive
		}
		defs := map[string]string{}
		for rows.Next() {
			var n, q string
			rows.Scan(&n, &q)
			defs[n] = q
		}
		rows.Close()
		for table, query := range defs {
			got := scanRows(t, db, "SELECT * FROM main."+table+" ORDER BY ALL")
			want := scanRows(t, db, "SELECT * FROM ("+query+") ORDER BY ALL")
			if msg := sameRows(got, want); msg != "" {
				t.Errorf("version %d: %s: %s", v.Version, table, msg)
			}
			checked++
		}
		db.Close()
	}
	if checked < 4 {
		t.Fatalf("checked %d derived tables in %d versions", checked, len(vs))
	}
	t.Logf("%d versions, %d derived tables checked", len(vs), checked)
}

func scanRows(t *testing.T, db *sql.DB, q string) [][]any {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	return out
}

// sameRows compares rows, floating values to a relative 1e-9; "" when
// equal.
func sameRows(got, want [][]any) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d rows, its query gives %d", len(got), len(want))
	}
	for i := range got {
		for j := range got[i] {
			g, w := got[i][j], want[i][j]
			if gf, ok := g.(float64); ok {
				if wf, ok := w.(float64); ok {
					if math.Abs(gf-wf) > 1e-9*math.Max(math.Abs(gf), math.Abs(wf)) {
						return fmt.Sprintf("row %d column %d: %v, its query gives %v", i, j, gf, wf)
					}
					continue
				}
			}
			if fmt.Sprint(g) != fmt.Sprint(w) {
				return fmt.Sprintf("row %d: %v, its query gives %v", i, got[i], want[i])
			}
		}
	}
	return ""
}
