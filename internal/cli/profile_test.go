package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/profile"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// TestProfileCommand: teactl profile prints the profile of a table (small,
// so one data file) with the exact counts of its few rows; --json has the
// same; teactl diff adds what changed in the columns' profiles; a file without a profile is
// named; a missing table is one line and exit 1.
func TestProfileCommand(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	runManager(t, s, "shop")
	reqs := []any{
		"create_table", map[string]any{"table": "orders", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "item", "type": "VARCHAR"}, {"name": "price", "type": "DECIMAL(9,2)"}, {"name": "day", "type": "DATE"}, {"name": "tags", "type": "VARCHAR[]"}}},
		"append", map[string]any{"table": "orders", "rows": []map[string]any{{"id": 1, "item": "tea", "price": "2.50", "day": "2026-01-02"}, {"id": 2, "item": "cake", "price": "14.00", "day": nil}, {"id": 3, "item": "tea", "price": "2.50", "day": "2026-01-01"}}},
		"append", map[string]any{"table": "orders", "rows": []map[string]any{{"id": 4, "item": "scone", "price": "3.10", "day": "2026-01-03"}, {"id": 5, "item": "tea", "price": "9.99", "day": nil, "tags": []string{"x"}}}},
	}
	for i := 0; i < len(reqs); i += 2 {
		id := fmt.Sprintf("r%d", i/2)
		s.Submit(t, stacktest.Request("shop", id, reqs[i].(string), reqs[i+1]))
		if n := s.Outcomes(t, "shop", time.Minute, id)[id]; n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", id, n.Status, n.Error)
		}
	}
	env := stackEnv(t, s)
	out, errOut, code := teactl(t, ctx, env, "profile", "shop", "orders", "--json")
	if code != 0 {
		t.Fatalf("profile --json: exit %d, %s", code, errOut)
	}
	var vp versionProfile
	if err := json.Unmarshal([]byte(out), &vp); err != nil {
		t.Fatal(err)
	}
	if len(vp.Tables) != 1 || vp.Tables[0].Files != 1 || vp.Tables[0].Rows != 5 || len(vp.Tables[0].Columns) != 5 {
		t.Fatalf("profile --json: want one table of 5 rows in 1 file with 5 columns:\n%s", out)
	}
	col := map[string]columnProfile{}
	for _, c := range vp.Tables[0].Columns {
		col[c.Name] = c
	}
	item, price, day, tags := col["item"], col["price"], col["day"], col["tags"]
	if *item.Distinct != 3 || *item.Min != "cake" || *item.Max != "tea" || len(item.Top) != 3 || item.Top[0] != (topValue{Value: "tea", Count: 3, Low: 3, Exact: true}) {
		t.Errorf("item: %+v", item)
	}
	if *price.Min != "2.50" || *price.Max != "14.00" || *price.Distinct != 4 {
		t.Errorf("price (2.50 < 14.00 as numbers): %+v", price)
	}
	if day.Nulls != 2 || day.NullShare != 0.4 || *day.Min != "2026-01-01" || *day.Max != "2026-01-03" {
		t.Errorf("day: %+v", day)
	}
	if tags.Nulls != 4 || tags.Distinct != nil || tags.Min != nil {
		t.Errorf("tags (a list: rows and nulls only): %+v", tags)
	}
	out, errOut, code = teactl(t, ctx, env, "profile", "shop")
	if code != 0 || !strings.Contains(out, "shop version") || !strings.Contains(out, "tea (3)") || !strings.Contains(out, "40.0%") {
		t.Fatalf("profile: exit %d, %s\n%s", code, errOut, out)
	}
	t.Logf("teactl profile shop:\n%s", out)

	// teactl diff adds the profile changes of the second append.
	out, errOut, code = teactl(t, ctx, env, "diff", "shop", "2", "3")
	if code != 0 || !strings.Contains(out, "orders.day: nulls 33.3% → 40.0%") || !strings.Contains(out, "orders.item: distinct ~2 → ~3; top entered: scone") || !strings.Contains(out, "orders.id: distinct ~3 → ~5; max 3 → 5; top entered: 4, 5") {
		t.Errorf("diff 2 3: exit %d, %s\n%s", code, errOut, out)
	}
	out, errOut, code = teactl(t, ctx, env, "diff", "shop", "2", "3", "--json")
	var rows []struct {
		Table   string       `json:"table"`
		Columns []columnDiff `json:"columns_profile"`
	}
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 1 || rows[0].Table != "orders" || len(rows[0].Columns) != 5 {
		t.Errorf("diff --json: exit %d, %v %s\n%s", code, err, errOut, out)
	}

	// A data file whose profile is gone is named.
	v, err := s.Ctl.GetVersion(ctx, "shop", 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []controldb.DataFile
	for _, tb := range v.Tables {
		if tb.Name == "orders" {
			files = tb.Files
		}
	}
	store, err := objstore.NewDir(s.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, snapshot.ProfileKey("shop", "orders", files[0].SHA256)); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = teactl(t, ctx, env, "profile", "shop", "orders")
	if code != 1 || !strings.Contains(errOut, "no profile for file "+files[0].SHA256) {
		t.Errorf("profile with a file's profile deleted: exit %d, %s", code, errOut)
	}
	out, _, code = teactl(t, ctx, env, "diff", "shop", "2", "3")
	if code != 0 || !strings.Contains(out, "orders: profiles not compared: no profile for file") {
		t.Errorf("diff with a file's profile deleted: exit %d\n%s", code, out)
	}
	_, errOut, code = teactl(t, ctx, env, "profile", "shop", "nope")
	if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("profile of a missing table: exit %d, %q", code, errOut)
	}
}

// TestProfileMergeModels: teactl profile M1,M2@N TABLE prints the profile
// of the union of the models' rows: rows, nulls, min and max exactly as
// DuckDB counts them over the models' data files together, distinct values
// within 3 standard errors, exact top counts equal to DuckDB's; a model
// whose table has other columns, a model listed twice and several models
// without a table are one line each and a failure.
func TestProfileMergeModels(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	fill := map[string]string{
		// k overlaps between east and west; x has nulls in both.
		"east": "CREATE TABLE trips AS SELECT range AS id, 'k' || (range % 40) AS k, CASE WHEN range % 9 = 0 THEN NULL ELSE range * 0.5 END::DOUBLE AS x FROM range(3000)",
		"west": "CREATE TABLE trips AS SELECT range AS id, 'k' || (20 + range % 70) AS k, CASE WHEN range % 4 = 0 THEN NULL ELSE -range * 0.25 END::DOUBLE AS x FROM range(2000, 7000)",
		"odd":  "CREATE TABLE trips AS SELECT range AS id, 'k' AS k FROM range(10)",
	}
	for _, m := range []string{"east", "west", "odd"} {
		s.CreateModel(t, controldb.Model{ID: m, AllowSQL: true})
		runManager(t, s, m)
		s.Submit(t, stacktest.Request(m, m+"-fill", "sql", map[string]any{"sql": fill[m]}))
		if n := s.Outcomes(t, m, time.Minute, m+"-fill")[m+"-fill"]; n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", m, n.Status, n.Error)
		}
	}
	// A second version of west adds rows: west@1 merges without them.
	s.Submit(t, stacktest.Request("west", "west-more", "append", map[string]any{"table": "trips", "rows": []map[string]any{{"id": 99999, "k": "new", "x": 1e6}}}))
	if n := s.Outcomes(t, "west", time.Minute, "west-more")["west-more"]; n.Status != model.StatusApplied {
		t.Fatalf("west-more: %s %s", n.Status, n.Error)
	}
	env := stackEnv(t, s)
	out, errOut, code := teactl(t, ctx, env, "profile", "east,west@1", "trips", "--json")
	if code != 0 {
		t.Fatalf("profile east,west@1 trips: exit %d, %s", code, errOut)
	}
	var mp mergedProfile
	if err := json.Unmarshal([]byte(out), &mp); err != nil {
		t.Fatal(err)
	}
	if len(mp.Models) != 2 || mp.Models[0] != (modelVersion{"east", 1}) || mp.Models[1] != (modelVersion{"west", 1}) {
		t.Fatalf("merged models %+v, want east version 1 and west version 1", mp.Models)
	}
	// The exact answers: DuckDB over the data files of both versions.
	var uris []string
	for _, mv := range mp.Models {
		v, err := s.Ctl.GetVersion(ctx, mv.Model, mv.Version)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range v.Tables[0].Files {
			uris = append(uris, filepath.Join(s.StoreDir, f.Key))
		}
	}
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	quoted := make([]string, len(uris))
	for i, u := range uris {
		quoted[i] = duck.Literal(u)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE u AS SELECT * FROM read_parquet(["+strings.Join(quoted, ", ")+"])"); err != nil {
		t.Fatal(err)
	}
	var rows int64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM u").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if mp.Table.Rows != rows || rows != 8000 || len(mp.Table.Columns) != 3 {
		t.Fatalf("merged %d rows, %d columns; DuckDB counts %d rows (want 8000) and 3 columns", mp.Table.Rows, len(mp.Table.Columns), rows)
	}
	for _, c := range mp.Table.Columns {
		id := duck.Ident(c.Name)
		var nulls, distinct int64
		var lo, hi string
		if err := db.QueryRowContext(ctx, "SELECT count(*) - count("+id+"), count(DISTINCT "+id+"), min("+id+")::VARCHAR, max("+id+")::VARCHAR FROM u").Scan(&nulls, &distinct, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if c.Nulls != nulls || *c.Min != lo || *c.Max != hi {
			t.Errorf("%s: merged nulls %d min %s max %s; DuckDB %d %s %s", c.Name, c.Nulls, *c.Min, *c.Max, nulls, lo, hi)
		}
		if d := float64(*c.Distinct); math.Abs(d-float64(distinct)) > 3*profile.StdError*float64(distinct)+1 {
			t.Errorf("%s: merged distinct ~%d, DuckDB %d: off by more than 3 standard errors", c.Name, *c.Distinct, distinct)
		}
		for _, v := range c.Top {
			var n int64
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM u WHERE "+id+"::VARCHAR = ?", v.Value).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n < v.Low || n > v.Count || (v.Exact && n != v.Count) {
				t.Errorf("%s: value %s counted %d..%d (exact %v), DuckDB %d", c.Name, v.Value, v.Low, v.Count, v.Exact, n)
			}
		}
	}
	// Without @1 west's latest version counts its appended row.
	out, errOut, code = teactl(t, ctx, env, "profile", "east,west", "trips")
	if code != 0 || !strings.Contains(out, "table trips merged over east version 1, west version 2: 8001 rows in") {
		t.Errorf("profile east,west trips: exit %d, %s\n%s", code, errOut, out)
	}
	t.Logf("teactl profile east,west trips:\n%s", out)
	for _, bad := range [][]string{{"east,odd", "trips"}, {"east,east", "trips"}, {"east,west"}, {"east,west", "trips", "--version", "1"}, {"east,nope", "trips"}} {
		_, errOut, code := teactl(t, ctx, env, append([]string{"profile"}, bad...)...)
		if code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("profile %q: exit %d, %q; want a failure in one line", bad, code, errOut)
		}
	}
}
