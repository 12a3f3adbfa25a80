package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
)

// Names of the raw JetStream baseline of scenario 1.
const (
	rawStream  = "BENCH_RAW"
	rawSubject = "bench.raw."
)

// smallTable is the table of the small-request models.
var smallTable = map[string]any{"table": "t", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}}}

// burst is one run of small requests and what was observed.
type burst struct {
	n       int
	sent    []time.Time // submit time per request
	done    []time.Time // final notification (or consumption) per request
	failed  atomic.Int64
	arrived atomic.Int64
	all     chan struct{} // closed when every request arrived
}

func newBurst(n int) *burst {
	return &burst{n: n, sent: make([]time.Time, n), done: make([]time.Time, n), all: make(chan struct{})}
}

// arrive records request i's outcome; called by one goroutine at a time
// per request, the first arrival counts.
func (u *burst) arrive(i int, ok bool) {
	if i < 0 || i >= u.n || !u.done[i].IsZero() {
		return
	}
	u.done[i] = time.Now()
	if !ok {
		u.failed.Add(1)
	}
	if u.arrived.Add(1) == int64(u.n) {
		close(u.all)
	}
}

// wait waits until every request arrived or timeout passed.
func (u *burst) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-u.all:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("bench: %d of %d requests arrived within %s", u.arrived.Load(), u.n, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rate is requests per second from the first submit to the last arrival.
func (u *burst) rate() float64 {
	first, last := u.sent[0], u.done[0]
	for i := range u.n {
		if u.sent[i].Before(first) {
			first = u.sent[i]
		}
		if u.done[i].After(last) {
			last = u.done[i]
		}
	}
	return float64(u.n) / last.Sub(first).Seconds()
}

// latencies are the submit → arrival times.
func (u *burst) latencies() []time.Duration {
	out := make([]time.Duration, u.n)
	for i := range u.n {
		out[i] = u.done[i].Sub(u.sent[i])
	}
	return out
}

// indexOf parses the request index from an id "<prefix>-<i>".
func indexOf(id, prefix string) int {
	s, ok := strings.CutPrefix(id, prefix+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return i
}

// roundRobin is the submit order of n requests over the clients: client c
// sends requests c, c+C, c+2C, ….
func roundRobin(n, clients int) [][]int {
	order := make([][]int, clients)
	for i := range n {
		order[i%clients] = append(order[i%clients], i)
	}
	return order
}

// publish submits u.n messages from the benchmark's clients, client c
// sending the messages order[c] in that order, asynchronously (not waiting
// for each PubAck), paced at rate messages/s overall when rate > 0 (message
// i is due i/rate seconds after the start). It returns once every PubAck
// arrived.
func (b *bench) publish(ctx context.Context, u *burst, order [][]int, rate float64, msg func(i int) (*nats.Msg, string), stream string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(b.clients))
	t0 := time.Now()
	for c, js := range b.clients {
		wg.Go(func() {
			futures := make([]jetstream.PubAckFuture, 0, len(order[c]))
			for _, i := range order[c] {
				if rate > 0 {
					if d := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				m, id := msg(i)
				u.sent[i] = time.Now()
				f, err := js.PublishMsgAsync(m, jetstream.WithMsgID(id), jetstream.WithExpectStream(stream))
				if err != nil {
					errs[c] = err
					return
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					errs[c] = err
					return
				case <-ctx.Done():
					errs[c] = ctx.Err()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// smallRequest is the one-row append request i of a burst.
func smallRequest(m, prefix string, i int) model.Request {
	args, _ := json.Marshal(map[string]any{"table": "t", "rows": []map[string]any{{"id": i, "v": "teabench row"}}})
	return model.Request{ID: fmt.Sprintf("%s-%d", prefix, i), Model: m, Function: "append", Args: args}
}

// teatreeBurst submits n one-row appends spread round-robin over models
// and waits for every final notification.
func (b *bench) teatreeBurst(ctx context.Context, models []string, n int, rate float64, prefix string) (*burst, error) {
	msg := func(i int) (*nats.Msg, string) {
		r := smallRequest(models[i%len(models)], prefix, i)
		data, _ := json.Marshal(r)
		return &nats.Msg{Subject: queue.RequestSubject(r.Model), Data: data}, r.ID
	}
	return b.submitAll(ctx, n, roundRobin(n, len(b.clients)), rate, prefix, msg)
}

// submitAll submits the n requests msg(i) (ids "<prefix>-<i>") in the
// given per-client order and waits for every final notification; it fails
// if one was not applied.
func (b *bench) submitAll(ctx context.Context, n int, order [][]int, rate float64, prefix string, msg func(i int) (*nats.Msg, string)) (*burst, error) {
	u := newBurst(n)
	sub, err := b.nc.Subscribe(queue.NotifySubject("*"), func(m *nats.Msg) {
		note, err := notify.Decode(m.Data)
		if err != nil || !note.Status.Final() {
			return
		}
		u.arrive(indexOf(note.RequestID, prefix), note.Status == model.StatusApplied)
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	if err := b.nc.Flush(); err != nil {
		return nil, err
	}
	if err := b.publish(ctx, u, order, rate, msg, queue.RequestStream); err != nil {
		return nil, err
	}
	if err := u.wait(ctx, 30*time.Second+time.Duration(n)*20*time.Millisecond); err != nil {
		return nil, err
	}
	if f := u.failed.Load(); f > 0 {
		return nil, fmt.Errorf("bench: %d of %d requests failed", f, n)
	}
	return u, nil
}

// rawBurst publishes n messages of size bytes spread round-robin over
// len(models) subjects of the raw stream and consumes them with one
// durable pull consumer per subject (AckAll acks at the end of what was
// pending, as a db-manager acks a batch), first publish to last message
// consumed.
func (b *bench) rawBurst(ctx context.Context, models []string, n, size int, prefix string) (*burst, error) {
	st, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{rawSubject + "*"}, Retention: jetstream.LimitsPolicy,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		return nil, err
	}
	if err := st.Purge(ctx); err != nil {
		return nil, err
	}
	u := newBurst(n)
	var mu sync.Mutex // arrive is called from one goroutine per consumer
	for _, m := range models {
		name := "raw-" + m
		_ = st.DeleteConsumer(ctx, name)
		cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: name, FilterSubject: rawSubject + m, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 100000, MaxDeliver: -1,
		})
		if err != nil {
			return nil, err
		}
		// Ack (AckAll) every 256th message and whenever the consumer
		// has nothing more pending: the end of a batch.
		n := 0
		cc, err := cons.Consume(func(msg jetstream.Msg) {
			mu.Lock()
			u.arrive(indexOf(msg.Headers().Get(jetstream.MsgIDHeader), prefix), true)
			mu.Unlock()
			n++
			if meta, err := msg.Metadata(); n%256 == 0 || (err == nil && meta.NumPending == 0) {
				_ = msg.Ack()
			}
		}, jetstream.PullMaxMessages(1000))
		if err != nil {
			return nil, err
		}
		defer cc.Stop()
	}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'x'
	}
	msg := func(i int) (*nats.Msg, string) {
		return &nats.Msg{Subject: rawSubject + models[i%len(models)], Data: payload}, fmt.Sprintf("%s-%d", prefix, i)
	}
	if err := b.publish(ctx, u, roundRobin(n, len(b.clients)), 0, msg, rawStream); err != nil {
		return nil, err
	}
	if err := u.wait(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	return u, nil
}

// setupSmallModels creates the models with table t and waits until their
// db-managers applied it.
func (b *bench) setupSmallModels(ctx context.Context, ids []string) error {
	args, _ := json.Marshal(smallTable)
	for _, m := range ids {
		if err := b.createModel(ctx, m); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, m := range ids {
		wg.Go(func() {
			_, _, errs[i] = b.submitWait(ctx, model.Request{ID: m + "-create", Model: m, Function: "create_table", Args: args}, 2*time.Minute)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// scenarioSmall is scenario 1: small requests to one model and to many,
// against raw JetStream, and the latency at half the maximum rate.
func (b *bench) scenarioSmall(ctx context.Context) ([]Result, error) {
	cfg := b.cfg
	one := []string{"small-1"}
	many := make([]string, cfg.Models)
	for i := range many {
		many[i] = fmt.Sprintf("small-%d-of-%d", i+1, cfg.Models)
	}
	if err := b.setupSmallModels(ctx, append(append([]string{}, one...), many...)); err != nil {
		return nil, err
	}
	sample, _ := json.Marshal(smallRequest(one[0], "small-x-999999", 999999))
	size := len(sample)
	var out []Result
	run := 0
	for _, c := range []struct {
		id     string
		models []string
	}{{"1a", one}, {"1b", many}} {
		res := Result{ID: c.id, Name: fmt.Sprintf("small requests, %d model(s): %d one-row appends, %d clients", len(c.models), cfg.Small, cfg.Clients),
			Unit: "req/s", BaseName: fmt.Sprintf("JetStream publish + pull consume, %d B messages", size), Target: "ratio >= 0.8"}
		var tt, raw, p50, p99, rp50, rp99 []float64
		for r := 0; r <= cfg.Runs; r++ { // run 0 is the warm-up
			n := cfg.Small
			if r == 0 {
				n = max(cfg.Small/4, 100)
			}
			run++
			u, err := b.teatreeBurst(ctx, c.models, n, 0, fmt.Sprintf("s%d", run))
			if err != nil {
				return out, err
			}
			v, err := b.rawBurst(ctx, c.models, n, size, fmt.Sprintf("r%d", run))
			if err != nil {
				return out, err
			}
			b.progress("%s run %d: teatree %.0f req/s, raw %.0f req/s", c.id, r, u.rate(), v.rate())
			if r == 0 {
				continue
			}
			lat, rlat := u.latencies(), v.latencies()
			tt, raw = append(tt, u.rate()), append(raw, v.rate())
			p50, p99 = append(p50, ms(percentile(lat, 0.5))), append(p99, ms(percentile(lat, 0.99)))
			rp50, rp99 = append(rp50, ms(percentile(rlat, 0.5))), append(rp99, ms(percentile(rlat, 0.99)))
		}
		res.Teatree, res.Baseline = newStat(tt), ptr(newStat(raw))
		res.setRatio("teatree req/s / raw req/s")
		res.Met = boolp(res.Ratio >= 0.8)
		res.Extra = map[string]any{
			"p50_ms": newStat(p50).Median, "p99_ms": newStat(p99).Median,
			"raw_p50_ms": newStat(rp50).Median, "raw_p99_ms": newStat(rp99).Median,
		}
		out = append(out, res)
	}

	// Latency at half the maximum rate of one model.
	rate := out[0].Teatree.Median / 2
	n := max(int(rate*cfg.PacedFor.Seconds()), 100)
	res := Result{ID: "1c", Name: fmt.Sprintf("small requests at half the max rate (%.0f req/s), 1 model: p99 submit→applied", rate),
		Unit: "ms", Target: "p99 < 1000 ms"}
	var p50, p99 []float64
	for r := range cfg.Runs {
		run++
		u, err := b.teatreeBurst(ctx, one, n, rate, fmt.Sprintf("s%d", run))
		if err != nil {
			return out, err
		}
		lat := u.latencies()
		p50, p99 = append(p50, ms(percentile(lat, 0.5))), append(p99, ms(percentile(lat, 0.99)))
		b.progress("1c run %d: %d requests at %.0f req/s: p50 %.0f ms, p99 %.0f ms", r+1, n, rate, p50[r], p99[r])
	}
	res.Teatree = newStat(p99)
	res.Met = boolp(res.Teatree.Median < 1000)
	res.Extra = map[string]any{"p50_ms": newStat(p50).Median, "requests": n}
	return append(out, res), nil
}

func ptr[T any](v T) *T { return &v }
