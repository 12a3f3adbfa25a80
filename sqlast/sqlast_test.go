package sqlast_test

import (
	"context"
	"errors"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/sqlast"
)

// TestRoundTrip: a parsed statement turns back into SQL that parses to the
// same tree, numbers exact; a changed tree turns into the changed SQL; not
// one statement is ErrNotOneStatement; aggregates are found by name.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const q = "SELECT g, count(*) AS n, avg(x) FILTER (WHERE x > 9007199254740993) FROM t WHERE y = 'a' GROUP BY g ORDER BY n DESC LIMIT 3"
	doc, node, err := sqlast.Parse(ctx, db, q)
	if err != nil {
		t.Fatal(err)
	}
	back, err := sqlast.Deserialize(ctx, db, doc, node)
	if err != nil {
		t.Fatal(err)
	}
	_, again, err := sqlast.Parse(ctx, db, back)
	if err != nil || !sqlast.Same(node, again) {
		t.Fatalf("%q → %q parses to another tree (%v)", q, back, err)
	}
	changed := sqlast.Copy(node).(map[string]any)
	item := changed["select_list"].([]any)[2].(map[string]any)
	item["function_name"] = "sum"
	sum, err := sqlast.Deserialize(ctx, db, doc, changed)
	if err != nil {
		t.Fatal(err)
	}
	if want := "SELECT g, count_star() AS n, sum(x) FILTER (WHERE (x > 9007199254740993)) FROM t WHERE (y = 'a') GROUP BY g ORDER BY n DESC LIMIT 3"; sum != want {
		t.Errorf("changed tree: %q, want %q", sum, want)
	}
	if sqlast.Same(node, changed) {
		t.Error("Same: avg and sum are the same")
	}
	aggs, err := sqlast.Aggregates(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if got := sqlast.FindAggregate(node["where_clause"], aggs); got != "" {
		t.Errorf("aggregate %q found in WHERE", got)
	}
	if got := sqlast.FindAggregate(item, aggs); got != "sum" {
		t.Errorf("FindAggregate = %q, want sum", got)
	}
	for _, bad := range []string{"SELECT 1; SELECT 2", ""} {
		if _, _, err := sqlast.Parse(ctx, db, bad); !errors.Is(err, sqlast.ErrNotOneStatement) {
			t.Errorf("%q: %v, want ErrNotOneStatement", bad, err)
		}
	}
	if _, _, err := sqlast.Parse(ctx, db, "SELEC 1"); err == nil {
		t.Error("a syntax error parsed")
	}
}
