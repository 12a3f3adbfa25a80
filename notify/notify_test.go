package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, js, err := queue.Connect(natsembed.StartTest(t), "notify-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := queue.EnsureStreams(context.Background(), js, queue.Config{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// applied returns n applied notifications of model m with stream
// sequences from first on.
func applied(m string, first, n int) []model.Notification {
	ns := make([]model.Notification, n)
	for i := range ns {
		seq := first + i
		ns[i] = model.Notification{RequestID: fmt.Sprintf("r%05d", seq), Model: m, Function: "append", Status: model.StatusApplied, Version: 7, Seq: uint64(seq)}
	}
	return ns
}

// stored returns every message of TEATREE_NOTIFY in stream order.
func stored(t *testing.T, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, queue.NotifyStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	c, err := js.OrderedConsumer(ctx, queue.NotifyStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for len(msgs) < want {
		b, err := c.Fetch(want-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if err := b.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return msgs
}

// requestIDs decodes msgs and fails on a repeated (request id, status).
func requestIDs(t *testing.T, msgs []jetstream.Msg) []string {
	t.Helper()
	seen := map[string]bool{}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		n, err := Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if seen[msgID(n)] {
			t.Errorf("notification %s stored twice", msgID(n))
		}
		seen[msgID(n)] = true
		ids = append(ids, n.RequestID)
	}
	return ids
}

func wantIDs(t *testing.T, got []string, ns []model.Notification) {
	t.Helper()
	if len(got) != len(ns) {
		t.Fatalf("stream holds %d notifications, want %d", len(got), len(ns))
	}
	for i, n := range ns {
		if got[i] != n.RequestID {
			t.Fatalf("notification %d is %s, want %s (stream order = list order)", i, got[i], n.RequestID)
		}
	}
}

// batches returns the sizes of the atomic batches msgs were stored in, in
// order (the server keeps the Nats-Batch-* headers on stored messages).
func batches(t *testing.T, msgs []jetstream.Msg) []int {
	t.Helper()
	var sizes []int
	id := ""
	for _, m := range msgs {
		b := m.Headers().Get(batchIDHeader)
		if b == "" {
			t.Fatalf("message %s has no %s header: not published in a batch", m.Headers().Get(jetstream.MsgIDHeader), batchIDHeader)
		}
		if b != id {
			sizes = append(sizes, 0)
			id = b
		}
		sizes[len(sizes)-1]++
	}
	return sizes
}

func TestPublishAllIsOneAtomicBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := setup(t)
	sub, err := Subscribe(ctx, js, "m", Start{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	ns := applied("m", 1, 250)
	if err := NewPublisher(js).PublishAll(ctx, ns); err != nil {
		t.Fatal(err)
	}
	msgs := stored(t, js)
	wantIDs(t, requestIDs(t, msgs), ns)
	if got := batches(t, msgs); len(got) != 1 || got[0] != len(ns) {
		t.Errorf("batch sizes = %v, want one batch of %d", got, len(ns))
	}
	if c := msgs[len(msgs)-1].Headers().Get(batchCommitHeader); c != "1" {
		t.Errorf("last message %s = %q, want 1", batchCommitHeader, c)
	}
	// A watcher (teactl watch, --wait) sees every notification of the batch.
	for _, n := range ns {
		got, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.RequestID != n.RequestID || got.Status != model.StatusApplied {
			t.Fatalf("watcher got %s %s, want %s applied", got.RequestID, got.Status, n.RequestID)
		}
	}
}

// TestPublishAllAllOrNothing: a batch whose last message the stream
// refuses stores none of the messages before it.
func TestPublishAllAllOrNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := setup(t)
	st, err := js.Stream(ctx, queue.NotifyStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 4 << 10
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ns := applied("m", 1, 20)
	ns[len(ns)-1].Status, ns[len(ns)-1].Error = model.StatusFailed, strings.Repeat("x", 8<<10)
	err = NewPublisher(js).PublishAll(ctx, ns)
	if !errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		t.Fatalf("PublishAll = %v, want the stream's message size refusal", err)
	}
	if msgs := stored(t, js); len(msgs) != 0 {
		t.Fatalf("stream holds %d of the refused batch's notifications, want none", len(msgs))
	}
}

// TestPublishAllRepublishAddsNoDuplicates: a publisher that crashed after
// some batches and publishes the whole list again (the db-manager's
// outbox) stores every notification once.
func TestPublishAllRepublishAddsNoDuplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := setup(t)
	p := NewPublisher(js)
	ns := applied("m", 1, MaxBatch+300)
	// First attempt: the first batch made it, then the crash.
	if err := p.PublishAll(ctx, ns[:MaxBatch]); err != nil {
		t.Fatal(err)
	}
	// A duplicate inside the second batch, published alone earlier.
	if err := p.Publish(ctx, ns[MaxBatch+10]); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := p.PublishAll(ctx, ns); err != nil {
			t.Fatalf("republish: %v", err)
		}
	}
	wantIDs(t, sortedBySeq(t, stored(t, js)), ns)
}

// sortedBySeq returns the request ids of msgs ordered by request stream
// sequence (a republish may store a notification out of list order).
func sortedBySeq(t *testing.T, msgs []jetstream.Msg) []string {
	t.Helper()
	ids := requestIDs(t, msgs)
	bySeq := make([]string, len(ids))
	for i, m := range msgs {
		n, _ := Decode(m.Data())
		if n.Seq < 1 || int(n.Seq) > len(ids) || bySeq[n.Seq-1] != "" {
			t.Fatalf("message %d: unexpected request seq %d", i, n.Seq)
		}
		bySeq[n.Seq-1] = n.RequestID
	}
	return bySeq
}

// TestPublishAllSplitsAtMaxBatch: more notifications than the server's
// batch limit go out as several atomic batches, in order.
func TestPublishAllSplitsAtMaxBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := setup(t)
	ns := applied("m", 1, 2*MaxBatch+500)
	if err := NewPublisher(js).PublishAll(ctx, ns); err != nil {
		t.Fatal(err)
	}
	msgs := stored(t, js)
	wantIDs(t, requestIDs(t, msgs), ns)
	got := batches(t, msgs)
	if want := []int{MaxBatch, MaxBatch, 500}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batch sizes = %v, want %v", got, want)
	}
}

// TestPublishAllWithoutAtomicStream: a stream an older release updated
// (allow_atomic off) still gets every notification, once.
func TestPublishAllWithoutAtomicStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := setup(t)
	st, err := js.Stream(ctx, queue.NotifyStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ns := applied("m", 1, 30)
	if err := NewPublisher(js).PublishAll(ctx, ns); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, requestIDs(t, stored(t, js)), ns)
}

// BenchmarkPublishAll compares one atomic batch with one PubAck per
// notification (the fallback) for a version of 100 requests.
func BenchmarkPublishAll(b *testing.B) {
	for _, c := range []struct {
		name    string
		publish func(*Publisher, context.Context, []model.Notification) error
	}{{"atomic", (*Publisher).PublishAll}, {"each", (*Publisher).publishEach}} {
		b.Run(c.name, func(b *testing.B) {
			nc, js, err := queue.Connect(natsembed.StartTest(b), "notify-bench")
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			ctx := context.Background()
			if err := queue.EnsureStreams(ctx, js, queue.Config{}); err != nil {
				b.Fatal(err)
			}
			p := NewPublisher(js)
			b.ResetTimer()
			for i := range b.N {
				if err := c.publish(p, ctx, applied("m", i*100+1, 100)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
