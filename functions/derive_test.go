package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/teatree/teatree/model"
)

// applyMaintained applies reqs in one transaction as the db-manager does
// with derived tables (dbmanager/derived.go): LoadDerived after BEGIN,
// CheckWrite and Reload after each request, Maintain once at the end.
func (m *testModel) applyMaintained(reqs ...request) ([]Result, error) {
	m.t.Helper()
	ctx := context.Background()
	if _, err := m.conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		m.t.Fatal(err)
	}
	rollback := func() { m.conn.ExecContext(ctx, "ROLLBACK") }
	d, err := LoadDerived(ctx, m.conn)
	if err != nil {
		rollback()
		return nil, err
	}
	env := m.env()
	env.Tables = NewTableCache()
	var changes []Result
	for _, r := range reqs {
		f, err := Lookup(r.fn)
		if err != nil {
			m.t.Fatal(err)
		}
		c, err := f.Decode(json.RawMessage(r.args))
		var res Result
		if err == nil {
			res, err = c.Apply(ctx, env)
		}
		if err == nil {
			err = d.CheckWrite(r.fn, res)
		}
		if err == nil && (r.fn == "derive" || r.fn == "drop_table") {
			err = d.Reload(ctx, m.conn)
		}
		if err != nil {
			rollback()
			return nil, err
		}
		changes = append(changes, res)
	}
	out, err := d.Maintain(ctx, m.conn, changes, true)
	if err != nil {
		rollback()
		return nil, err
	}
	if _, err := m.conn.ExecContext(ctx, "COMMIT"); err != nil {
		m.t.Fatalf("commit: %v", err)
	}
	return out, nil
}

func (m *testModel) mustMaintained(reqs ...request) []Result {
	m.t.Helper()
	out, err := m.applyMaintained(reqs...)
	if err != nil {
		m.t.Fatalf("%v: %v", reqs, err)
	}
	return out
}

func deriveArgsJSON(t *testing.T, table, query string) string {
	return mustJSON(t, map[string]string{"table": table, "query": query})
}

func TestDeriveInputsFromTheAST(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"SELECT a, count(*) FROM t GROUP BY a", []string{"t"}},
		{"SELECT * FROM t JOIN u USING (id)", []string{"t", "u"}},
		{"SELECT * FROM main.T WHERE x IN (SELECT x FROM v)", []string{"t", "v"}},
		{"WITH c AS (SELECT * FROM t) SELECT * FROM c", []string{"t"}},
		// A CTE named like a table shadows it; a CTE's body sees the
		// tables, not later CTEs.
		{"WITH t AS (SELECT * FROM u) SELECT * FROM t", []string{"u"}},
		{"WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b", []string{"b"}},
		{"SELECT 1 FROM t UNION ALL SELECT 2 FROM u", []string{"t", "u"}},
		{"SELECT (SELECT max(x) FROM w) AS m FROM t", []string{"t", "w"}},
		{"SELECT 'FROM x' AS s FROM t", []string{"t"}},
	} {
		_, node, err := parseExact(tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if got := tablesRead(node); !slices.Equal(got, tc.want) {
			t.Errorf("%s: reads %v, want %v", tc.query, got, tc.want)
		}
	}
}

func TestDeriveRule(t *testing.T) {
	for _, tc := range []struct {
		query  string
		reason string // "" incremental
	}{
		{"SELECT g, count(*) AS n, sum(x) AS s, min(x), max(x), avg(x), count(x) FROM t GROUP BY ALL", ""},
		{"SELECT g, count(*) AS n FROM t GROUP BY g", ""},
		{"SELECT g AS k, count(*) AS n FROM t GROUP BY k", ""},
		{"SELECT date_trunc('month', d) AS m, o, avg(CASE WHEN x > 15 THEN 1.0 ELSE 0.0 END) FROM t AS f WHERE x > 0 GROUP BY 1, 2", ""},
		{"SELECT date_trunc('month', d), count(*) FROM t GROUP BY date_trunc('month', d)", ""},
		{"SELECT g, quantile_cont(x, 0.5) FROM t GROUP BY ALL", "quantile_cont() is not a decomposable"},
		{"SELECT g, count(DISTINCT x) FROM t GROUP BY ALL", "DISTINCT"},
		{"SELECT g, sum(x) FILTER (WHERE x > 1) FROM t GROUP BY ALL", "FILTER"},
		{"SELECT g, round(avg(x), 2) FROM t GROUP BY ALL", "neither a group key"},
		{"SELECT g, count(*) FROM t GROUP BY ALL ORDER BY g", "ORDER BY"},
		{"SELECT g, count(*) FROM t GROUP BY ALL HAVING count(*) > 1", "HAVING"},
		{"SELECT t.g, count(*) FROM t JOIN u USING (id) GROUP BY ALL", "exactly one table"},
		{"SELECT g, count(*) FROM t GROUP BY ROLLUP (g)", "GROUPING SETS"},
		{"SELECT g, h, count(*) FROM t GROUP BY g", "not exactly its non-aggregate"},
		{"SELECT count(*) FROM t", "no GROUP BY key"},
		{"SELECT * FROM t", "neither a group key"},
		{"WITH c AS (SELECT * FROM t) SELECT g, count(*) FROM c GROUP BY ALL", "WITH"},
		{"SELECT g, count(*) FROM t WHERE x IN (SELECT x FROM u) GROUP BY ALL", "subquery"},
	} {
		a := &deriveArgs{Table: "d", Query: tc.query}
		if err := checkDerive(a); err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		switch {
		case tc.reason == "" && a.plan == nil:
			t.Errorf("%s: recomputed (%s), want incremental", tc.query, a.reason)
		case tc.reason != "" && a.plan != nil:
			t.Errorf("%s: incremental, want recomputed because %q", tc.query, tc.reason)
		case tc.reason != "" && !strings.Contains(a.reason, tc.reason):
			t.Errorf("%s: reason %q, want it to contain %q", tc.query, a.reason, tc.reason)
		}
	}
}

func TestDeriveRefused(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustMaintained(request{"derive", deriveArgsJSON(t, "d1", "SELECT v, count(*) AS n FROM t GROUP BY ALL")})
	m.mustMaintained(request{"derive", deriveArgsJSON(t, "d2", "SELECT n, count(*) AS c FROM d1 GROUP BY ALL")})
	for _, tc := range []struct{ fn, args, want string }{
		{"derive", deriveArgsJSON(t, "t2", "SELECT * FROM t2"), "cannot read itself"},
		{"derive", deriveArgsJSON(t, "d1", "SELECT * FROM d2"), "cycle: d1 → d2 → d1"},
		{"derive", deriveArgsJSON(t, "d", "SELECT 1 AS x"), "reads no table"},
		{"derive", deriveArgsJSON(t, "d", "SELECT * FROM nope"), `"nope", which is not a table`},
		{"derive", deriveArgsJSON(t, "d", "SELECT * FROM read_csv('f.csv')"), "table function"},
		{"append", `{"table":"d1","rows":[{"v":"x","n":1}]}`, "is derived"},
		{"refresh", `{"table":"d1","query":"SELECT 1 AS v, 2 AS n"}`, "is derived"},
		{"drop_table", `{"table":"t"}`, `reads "t", which no longer exists`},
	} {
		_, err := m.applyMaintained(request{tc.fn, tc.args})
		if err == nil || !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want an invalid error containing %q", tc.fn, tc.args, err, tc.want)
		}
	}
	// drop_table of a derived table removes its definition (and its
	// dependants go first).
	m.mustMaintained(request{"drop_table", `{"table":"d2"}`})
	m.mustMaintained(request{"drop_table", `{"table":"d1"}`})
	wantRows(t, m, "SELECT count(*) FROM _teatree.derived", "0")
	m.mustMaintained(request{"append", `{"table":"t","rows":[{"id":9,"v":"z"}]}`})
}

// TestDeriveEqualsRecompute applies random batches of appends, updates
// and deletes to two inputs and checks after every batch that every
// derived table equals its query run afresh (floating values to a
// relative 1e-9), and that both the incremental and the full path ran,
// each where the rule says.
func TestDeriveEqualsRecompute(t *testing.T) {
	m := newModel(t)
	ctx := context.Background()
	m.mustApply("create_table", `{"table":"sales","columns":[{"name":"id","type":"BIGINT"},{"name":"store","type":"VARCHAR"},{"name":"day","type":"DATE"},{"name":"amount","type":"DOUBLE"},{"name":"qty","type":"INTEGER"}]}`)
	m.mustApply("create_table", `{"table":"stores","columns":[{"name":"store","type":"VARCHAR"},{"name":"region","type":"VARCHAR"}]}`)
	defs := map[string]string{
		// incremental: over sales
		"by_store": "SELECT store, date_trunc('month', day) AS month, count(*) AS n, count(amount) AS n_amount, sum(amount) AS total, sum(qty) AS qty, min(amount) AS lo, max(day) AS last_day, avg(amount) AS mean, avg(qty) AS mean_qty FROM sales WHERE qty IS DISTINCT FROM 0 GROUP BY ALL",
		// incremental over a derived table (it is modified, so recomputed)
		"z_months": "SELECT month, count(*) AS stores, sum(total) AS total FROM by_store GROUP BY ALL",
		// full: a join of both inputs
		"by_region": "SELECT region, count(*) AS n, sum(amount) AS total FROM sales JOIN stores USING (store) GROUP BY ALL",
		// incremental over stores
		"regions": "SELECT region, count(*) AS n FROM stores GROUP BY 1",
	}
	names := []string{"by_store", "by_region", "regions", "z_months"}
	for _, n := range names {
		m.mustMaintained(request{"derive", deriveArgsJSON(t, n, defs[n])})
	}
	wantRows(t, m, "SELECT table_name, rule FROM _teatree.derived ORDER BY 1",
		"by_region|full", "by_store|incremental", "regions|incremental", "z_months|incremental")

	rng := rand.New(rand.NewPCG(7, 16))
	storesList := []any{"a", "b", "c", "d", nil}
	nextID := 0
	row := func() map[string]any {
		nextID++
		r := map[string]any{"id": nextID, "store": storesList[rng.IntN(len(storesList))],
			"day": fmt.Sprintf("2026-%02d-%02d", 1+rng.IntN(3), 1+rng.IntN(28)), "amount": rng.Float64() * 1000, "qty": rng.IntN(5)}
		if rng.IntN(6) == 0 {
			r["amount"] = nil
		}
		return r
	}
	paths := map[string]map[string]int{}
	for batch := range 40 {
		var reqs []request
		for range 1 + rng.IntN(3) {
			switch k := rng.IntN(10); {
			case k < 6:
				rows := []map[string]any{}
				for range 1 + rng.IntN(20) {
					rows = append(rows, row())
				}
				reqs = append(reqs, request{"append", mustJSON(t, map[string]any{"table": "sales", "rows": rows})})
			case k == 6:
				reqs = append(reqs, request{"update", mustJSON(t, map[string]any{"table": "sales", "set": map[string]any{"amount": rng.Float64()}, "where": []map[string]any{{"column": "id", "op": "<", "value": rng.IntN(nextID + 1)}}})})
			case k == 7:
				reqs = append(reqs, request{"delete", mustJSON(t, map[string]any{"table": "sales", "where": []map[string]any{{"column": "store", "op": "=", "value": storesList[rng.IntN(4)]}}})})
			case k == 8:
				reqs = append(reqs, request{"append", mustJSON(t, map[string]any{"table": "stores", "rows": []map[string]any{{"store": storesList[rng.IntN(4)], "region": []string{"n", "s"}[rng.IntN(2)]}}})})
			default:
				reqs = append(reqs, request{"delete", mustJSON(t, map[string]any{"table": "stores", "where": []map[string]any{{"column": "region", "op": "=", "value": "n"}}})})
			}
		}
		out := m.mustMaintained(reqs...)
		appendsOnly := map[string]bool{"sales": true, "stores": true}
		for _, r := range reqs {
			var a struct{ Table string }
			json.Unmarshal([]byte(r.args), &a)
			if r.fn != "append" {
				appendsOnly[a.Table] = false
			}
		}
		for _, r := range out {
			var path string
			if err := m.conn.QueryRowContext(ctx, "SELECT refresh_path FROM _teatree.derived WHERE table_name = ?", r.Tables[0]).Scan(&path); err != nil {
				t.Fatal(err)
			}
			if paths[r.Tables[0]] == nil {
				paths[r.Tables[0]] = map[string]int{}
			}
			paths[r.Tables[0]][path]++
			// The documented rule: incremental exactly when the plan
			// allows it and the input only received appends.
			want := PathFull
			switch r.Tables[0] {
			case "by_store":
				if appendsOnly["sales"] {
					want = PathIncremental
				}
			case "regions":
				if appendsOnly["stores"] {
					want = PathIncremental
				}
			}
			if path != want {
				t.Errorf("batch %d: %s refreshed by %s, want %s (%v)", batch, r.Tables[0], path, want, reqs)
			}
		}
		for _, n := range names {
			equalRecompute(t, m, n, defs[n])
		}
	}
	for _, n := range []string{"by_store", "regions"} {
		if paths[n][PathIncremental] == 0 || paths[n][PathFull] == 0 {
			t.Errorf("%s refreshed %v: want both paths exercised", n, paths[n])
		}
	}
	if paths["by_region"][PathIncremental] > 0 || paths["z_months"][PathIncremental] > 0 {
		t.Errorf("joins and derived inputs refreshed incrementally: %v", paths)
	}
}

// equalRecompute compares table with query run afresh, rows sorted,
// floating values to a relative 1e-9.
func equalRecompute(t *testing.T, m *testModel, table, query string) {
	t.Helper()
	got := scanAll(t, m, "SELECT * FROM main."+table+" ORDER BY ALL")
	want := scanAll(t, m, "SELECT * FROM ("+query+") ORDER BY ALL")
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, a recompute has %d", table, len(got), len(want))
	}
	for i := range got {
		for j := range got[i] {
			g, w := got[i][j], want[i][j]
			gf, gok := g.(float64)
			wf, wok := w.(float64)
			if gok && wok {
				if math.Abs(gf-wf) > 1e-9*math.Max(math.Abs(gf), math.Abs(wf)) {
					t.Fatalf("%s row %d column %d: %v, a recompute has %v", table, i, j, gf, wf)
				}
				continue
			}
			if fmt.Sprint(g) != fmt.Sprint(w) {
				t.Fatalf("%s row %d column %d: %v, a recompute has %v\n%v\n%v", table, i, j, g, w, got[i], want[i])
			}
		}
	}
}

func scanAll(t *testing.T, m *testModel, q string) [][]any {
	t.Helper()
	rows, err := m.conn.QueryContext(context.Background(), q)
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

// TestDeriveDependencyOrder: a_top reads z_base, which reads t; by name
// a_top would come first. One append must leave both current.
func TestDeriveDependencyOrder(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustMaintained(request{"derive", deriveArgsJSON(t, "z_base", "SELECT v, count(*) AS n FROM t GROUP BY ALL")})
	m.mustMaintained(request{"derive", deriveArgsJSON(t, "a_top", "SELECT n, count(*) AS c FROM z_base GROUP BY ALL")})
	out := m.mustMaintained(request{"append", `{"table":"t","rows":[{"id":1,"v":"x"},{"id":2,"v":"x"},{"id":3,"v":"y"}]}`})
	var order []string
	for _, r := range out {
		order = append(order, r.Tables[0])
	}
	if !slices.Equal(order, []string{"z_base", "a_top"}) {
		t.Errorf("refreshed %v, want z_base then a_top", order)
	}
	wantRows(t, m, "SELECT * FROM a_top ORDER BY ALL", "1|1", "2|1")
	// A derive in the same batch as appends: its table is current too.
	m.mustMaintained(
		request{"append", `{"table":"t","rows":[{"id":4,"v":"y"}]}`},
		request{"derive", deriveArgsJSON(t, "z_base", "SELECT v, count(*) AS n, max(id) AS top FROM t GROUP BY ALL")},
		request{"append", `{"table":"t","rows":[{"id":5,"v":"z"}]}`})
	wantRows(t, m, "SELECT * FROM z_base ORDER BY ALL", "x|2|2", "y|2|4", "z|1|5")
	wantRows(t, m, "SELECT * FROM a_top ORDER BY ALL", "1|1", "2|2")
}

// TestDeriveIncrementalFormMustBind: a query in the rule whose rewritten
// form does not bind (a column qualified with the schema) is recomputed,
// and says why.
func TestDeriveIncrementalFormMustBind(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustMaintained(request{"derive", deriveArgsJSON(t, "d", "SELECT main.t.v, count(*) AS n FROM main.t GROUP BY ALL")})
	wantRows(t, m, "SELECT rule, reason LIKE 'its incremental form does not bind%' FROM _teatree.derived", "full|true")
	m.mustMaintained(request{"append", `{"table":"t","rows":[{"id":1,"v":"x"}]}`})
	wantRows(t, m, "SELECT * FROM d", "x|1")
}
