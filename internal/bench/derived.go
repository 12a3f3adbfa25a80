package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/teatree/teatree/model"
)

// derivedModel is scenario 3d's model: the flights with monthly_delays
// derived (a model of its own, so that the other scenarios' flights
// model has no derived table).
const derivedModel = "derived"

// monthlyQuery is the demo's monthly_delays (scripts/demo.sh): count,
// avg and max per month and origin, maintained incrementally.
const monthlyQuery = "SELECT date_trunc('month', date)::DATE AS month, origin, count(*) AS flights, avg(delay) AS avg_delay, max(delay) AS max_delay, avg(CASE WHEN delay > 15 THEN 1.0 ELSE 0.0 END) AS late_share, avg(distance) AS avg_distance FROM flights GROUP BY ALL"

// scenarioDerived is scenario 3d: a one-row append to the 3 M-row flights
// model with monthly_delays derived, submit→applied with the derived
// table current in the version (incremental), against the same append
// followed by a refresh of the same query (the way before derive); and a
// one-row delete, which recomputes monthly_delays (3dd).
func (b *bench) scenarioDerived(ctx context.Context) ([]Result, error) {
	if _, _, err := b.ingest(ctx, derivedModel); err != nil {
		return nil, err
	}
	req := func(id, function string, args any) model.Request {
		data, _ := json.Marshal(args)
		return model.Request{ID: id, Model: derivedModel, Function: function, Args: data}
	}
	d, _, err := b.submitWait(ctx, req("derive", "derive", map[string]any{"table": "monthly_delays", "query": monthlyQuery}), 5*time.Minute)
	if err != nil {
		return nil, err
	}
	b.progress("3d: derive monthly_delays %.0f ms", ms(d))
	// Appends first, then the refreshes, then the deletes: a delete's
	// lazy costs (the checkpoint that vacuums its row, Parquet files
	// rewritten) would otherwise land on the next append.
	var appended, refreshed, deleted, queuedApplied, appliedPublished []float64
	for r := 0; r <= b.cfg.Changes; r++ { // run 0 is the warm-up
		row := maps.Clone(changeRow)
		row["distance"] = 10000 + r
		da, n, err := b.submitWait(ctx, changeRequest(derivedModel, "flights", fmt.Sprintf("derived-append-%d", r), row), 5*time.Minute)
		if err != nil {
			return nil, err
		}
		qa, ap := n.Applied.Sub(n.Queued), n.Published.Sub(n.Applied)
		b.progress("3d run %d: one-row append with monthly_delays derived %.0f ms (queued→applied %.0f ms, applied→published %.0f ms)", r, ms(da), ms(qa), ms(ap))
		if r > 0 {
			appended = append(appended, ms(da))
			queuedApplied, appliedPublished = append(queuedApplied, ms(qa)), append(appliedPublished, ms(ap))
		}
	}
	for r := 0; r <= b.cfg.Changes; r++ {
		// The way before derive: a refresh after the append.
		dr, _, err := b.submitWait(ctx, req(fmt.Sprintf("derived-refresh-%d", r), "refresh", map[string]any{"table": "monthly_refreshed", "query": monthlyQuery}), 5*time.Minute)
		if err != nil {
			return nil, err
		}
		b.progress("3d run %d: refresh of the same query %.0f ms", r, ms(dr))
		if r > 0 {
			refreshed = append(refreshed, appended[r-1]+ms(dr))
		}
	}
	for r := 0; r <= b.cfg.Changes; r++ {
		dd, _, err := b.submitWait(ctx, req(fmt.Sprintf("derived-delete-%d", r), "delete", map[string]any{"table": "flights",
			"where": []map[string]any{{"column": "distance", "op": "=", "value": 10000 + r}}}), 5*time.Minute)
		if err != nil {
			return nil, err
		}
		b.progress("3d run %d: one-row delete with monthly_delays derived (recomputed) %.0f ms", r, ms(dd))
		if r > 0 {
			deleted = append(deleted, ms(dd))
		}
	}
	res := Result{ID: "3d", Name: "one-row append to the 3 M-row flights model with monthly_delays derived (incremental), submit→applied",
		Unit: "ms", Teatree: newStat(appended), Baseline: ptr(newStat(refreshed)), BaseName: "the same append, then a refresh of monthly_delays", Target: "< 300 ms"}
	res.setRatio("derived ms / append+refresh ms")
	res.Met = boolp(res.Teatree.Median < 300)
	res.Extra = map[string]any{"queued_applied_ms": newStat(queuedApplied).Median, "applied_published_ms": newStat(appliedPublished).Median}
	del := Result{ID: "3dd", Name: "one-row delete from the flights model with monthly_delays derived (recomputed), submit→applied",
		Unit: "ms", Teatree: newStat(deleted), Target: "reported"}
	return []Result{res, del}, nil
}
