package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// TestDerivedCommand: teactl derived lists the derived tables of the
// latest version with their inputs, rule and last refresh path; the
// incremental one was refreshed incrementally by an append, the join is
// recomputed and says why.
func TestDerivedCommand(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop"})
	runManager(t, s, "shop")
	reqs := []any{
		"create_table", map[string]any{"table": "orders", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "item", "type": "VARCHAR"}, {"name": "price", "type": "DOUBLE"}}},
		"create_table", map[string]any{"table": "items", "columns": []map[string]string{{"name": "item", "type": "VARCHAR"}, {"name": "kind", "type": "VARCHAR"}}},
		"derive", map[string]any{"table": "by_item", "query": "SELECT item, count(*) AS n, avg(price) AS mean FROM orders GROUP BY ALL"},
		"derive", map[string]any{"table": "by_kind", "query": "SELECT kind, count(*) AS n FROM orders JOIN items USING (item) GROUP BY ALL"},
		"append", map[string]any{"table": "orders", "rows": []map[string]any{{"id": 1, "item": "tea", "price": 2.5}, {"id": 2, "item": "tea", "price": 3.5}}},
	}
	for i := 0; i < len(reqs); i += 2 {
		id := fmt.Sprintf("r%d", i/2)
		s.Submit(t, stacktest.Request("shop", id, reqs[i].(string), reqs[i+1]))
		if n := s.Outcomes(t, "shop", time.Minute, id)[id]; n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", id, n.Status, n.Error)
		}
	}
	env := stackEnv(t, s)
	out, errOut, code := teactl(t, ctx, env, "derived", "shop", "--json")
	if code != 0 {
		t.Fatalf("derived --json: exit %d, %s", code, errOut)
	}
	var ts []derivedTable
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 {
		t.Fatalf("derived --json: want 2 tables:\n%s", out)
	}
	item, kind := ts[0], ts[1]
	if item.Table != "by_item" || item.Rule != "incremental" || item.Path != "incremental" || item.Rows != 1 || strings.Join(item.Inputs, ",") != "orders" {
		t.Errorf("by_item: %+v", item)
	}
	if kind.Table != "by_kind" || kind.Rule != "full" || kind.Path != "full" || !strings.Contains(kind.Reason, "exactly one table") || strings.Join(kind.Inputs, ",") != "items,orders" {
		t.Errorf("by_kind: %+v", kind)
	}
	out, errOut, code = teactl(t, ctx, env, "derived", "shop")
	if code != 0 || !strings.Contains(out, "by_item  orders") || !strings.Contains(out, "WHY FULL") {
		t.Errorf("derived: exit %d %s\n%s", code, errOut, out)
	}
}
