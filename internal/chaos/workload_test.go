package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// op is one request of the workload on table t(k BIGINT, v BIGINT) of a
// model: append a row with a unique k, set v of a row, or delete a row.
type op struct {
	id    string
	model string
	kind  string // append, update, delete
	k, v  int64
}

func (o op) request() model.Request {
	var args any
	switch o.kind {
	case "create":
		args = map[string]any{"table": "t", "columns": []map[string]string{{"name": "k", "type": "BIGINT"}, {"name": "v", "type": "BIGINT"}}}
		return model.Request{ID: o.id, Model: o.model, Function: "create_table", Args: mustJSON(args)}
	case "append":
		args = map[string]any{"table": "t", "rows": []map[string]int64{{"k": o.k, "v": o.v}}}
	case "update":
		args = map[string]any{"table": "t", "set": map[string]int64{"v": o.v}, "where": []map[string]any{{"column": "k", "op": "=", "value": o.k}}}
	case "delete":
		args = map[string]any{"table": "t", "where": []map[string]any{{"column": "k", "op": "=", "value": o.k}}}
	}
	return model.Request{ID: o.id, Model: o.model, Function: o.kind, Args: mustJSON(args)}
}

func mustJSON(v any) json.RawMessage {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// ack is an acknowledged request: its op and the stream sequence of the
// PubAck.
type ack struct {
	op
	seq uint64
}

// workload generates ops: 70% appends, 20% updates, 10% deletes, the last
// two on rows appended earlier.
type workload struct {
	mu     sync.Mutex
	rng    *rand.Rand
	models []string
	keys   map[string][]int64
	nextK  int64
	n      int
}

func (w *workload) next() op {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	m := w.models[w.rng.IntN(len(w.models))]
	o := op{id: fmt.Sprintf("%s-%06d", m, w.n), model: m, v: int64(w.n)}
	keys := w.keys[m]
	switch r := w.rng.IntN(10); {
	case r < 7 || len(keys) == 0:
		w.nextK++
		o.kind, o.k = "append", w.nextK
		w.keys[m] = append(keys, o.k)
	case r < 9:
		o.kind, o.k = "update", keys[w.rng.IntN(len(keys))]
	default:
		o.kind, o.k = "delete", keys[w.rng.IntN(len(keys))]
	}
	return o
}

// submit publishes o until JetStream acknowledges it, reconnecting and
// retrying with the same request id, as a careful client does.
func submit(ctx context.Context, natsURL string, o op, retries *atomic.Int64) (ack, error) {
	for {
		c, err := clientFor(natsURL)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			pa, perr := queue.Publish(pctx, c.js, o.request(), nil)
			cancel()
			if perr == nil {
				return ack{op: o, seq: pa.Sequence}, nil
			}
			err = perr
		}
		if ctx.Err() != nil {
			return ack{}, fmt.Errorf("request %s never acknowledged: %w", o.id, err)
		}
		retries.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
}

// run submits total ops with the given number of clients at about rate
// requests per second, and returns the acknowledgements.
func (w *workload) run(ctx context.Context, natsURL string, clients, total int, rate float64, retries *atomic.Int64) ([]ack, error) {
	var (
		mu   sync.Mutex
		acks []ack
		errs []error
		wg   sync.WaitGroup
	)
	per := time.Duration(float64(time.Second) * float64(clients) / rate)
	var left atomic.Int64
	left.Store(int64(total))
	for range clients {
		wg.Go(func() {
			tick := time.NewTicker(per)
			defer tick.Stop()
			for left.Add(-1) >= 0 {
				a, err := submit(ctx, natsURL, w.next(), retries)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acks = append(acks, a)
				}
				mu.Unlock()
				if err != nil {
					return
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return acks, errs[0]
	}
	return acks, nil
}

// reference replays the acknowledged ops of one model in acknowledgement
// order: the expected final table, k → v.
func reference(acks []ack) map[int64]int64 {
	sort.Slice(acks, func(i, j int) bool { return acks[i].seq < acks[j].seq })
	t := map[int64]int64{}
	for _, a := range acks {
		switch a.kind {
		case "append":
			t[a.k] = a.v
		case "update":
			if _, ok := t[a.k]; ok {
				t[a.k] = a.v
			}
		case "delete":
			delete(t, a.k)
		}
	}
	return t
}
