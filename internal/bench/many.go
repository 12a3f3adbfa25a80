package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/queue"
)

// countDBManagers counts the running db-managers of models named
// prefix*.
func countDBManagers(prefix string) int {
	n := 0
	for _, c := range dbManagers() {
		if strings.HasPrefix(c.Model, prefix) {
			n++
		}
	}
	return n
}

// scenarioMany is scenario 5: N models, each getting a create_table and
// then one-row appends (R requests per model), all submitted at once by the
// clients; the time from first submit to the last applied notification,
// the peak number of db-manager processes, and the time until the
// dispatcher stopped the idle ones.
func (b *bench) scenarioMany(ctx context.Context) ([]Result, error) {
	cfg := b.cfg
	if cfg.ManyModels == 0 {
		return nil, nil
	}
	N, R, C := cfg.ManyModels, cfg.ManyReqs, len(b.clients)
	res := Result{ID: "5", Name: fmt.Sprintf("many models: %d models × %d requests (create_table + appends), first submit→last applied", N, R),
		Unit: "s", Target: "idle db-managers stopped"}
	var total, peaks, idle, rates []float64
	allStopped := true
	createArgs, _ := json.Marshal(smallTable)
	for r := range cfg.Runs {
		prefix := fmt.Sprintf("many%d-", r)
		models := make([]string, N)
		for j := range models {
			models[j] = fmt.Sprintf("%s%d", prefix, j)
			if err := b.createModel(ctx, models[j]); err != nil {
				return nil, err
			}
		}
		// Request i is request i%R of model i/R; client c sends the
		// requests of models c, c+C, … round by round, so each model's
		// requests go, in order, through one connection.
		order := make([][]int, C)
		for k := range R {
			for j := range N {
				order[j%C] = append(order[j%C], j*R+k)
			}
		}
		msg := func(i int) (*nats.Msg, string) {
			j, k := i/R, i%R
			rq := smallRequest(models[j], prefix+"r", i)
			if k == 0 {
				rq.Function, rq.Args = "create_table", createArgs
			}
			data, _ := json.Marshal(rq)
			return &nats.Msg{Subject: queue.RequestSubject(models[j]), Data: data}, rq.ID
		}
		// Count the db-managers while the burst runs.
		peak := 0
		var mu sync.Mutex
		pctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				n := countDBManagers(prefix)
				mu.Lock()
				peak = max(peak, n)
				mu.Unlock()
				select {
				case <-pctx.Done():
					return
				case <-t.C:
				}
			}
		})
		u, err := b.submitAll(ctx, N*R, order, 0, prefix+"r", msg)
		stop()
		wg.Wait()
		if err != nil {
			return nil, err
		}
		elapsed := float64(N*R) / u.rate()
		// Wait for the dispatcher to stop the idle db-managers.
		t0 := time.Now()
		deadline := t0.Add(cfg.IdleTimeout + 2*time.Minute)
		left := countDBManagers(prefix)
		for left > 0 && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			left = countDBManagers(prefix)
		}
		allStopped = allStopped && left == 0
		b.progress("5 run %d: %d requests to %d models in %.1f s (%.0f req/s), peak %d db-managers, %d left %.0f s later",
			r+1, N*R, N, elapsed, u.rate(), peak, left, time.Since(t0).Seconds())
		total, peaks, idle, rates = append(total, elapsed), append(peaks, float64(peak)), append(idle, time.Since(t0).Seconds()), append(rates, u.rate())
	}
	res.Teatree, res.Met = newStat(total), boolp(allStopped)
	res.Extra = map[string]any{
		"peak_db_managers": newStat(peaks).Median, "req_per_s": newStat(rates).Median,
		"all_stopped_after_s": newStat(idle).Median, "idle_timeout": cfg.IdleTimeout.String(),
	}
	return []Result{res}, nil
}
