package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/model"
)

func setup(t *testing.T, cfg Config) jetstream.JetStream {
	t.Helper()
	nc, js, err := Connect(natsembed.StartTest(t), "queue-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := EnsureStreams(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return js
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{})
	if err := EnsureStreams(ctx, js, Config{MaxAge: time.Hour}); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	s, err := js.Stream(ctx, RequestStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != time.Hour || info.Config.Retention != jetstream.LimitsPolicy || info.Config.Duplicates != 10*time.Minute {
		t.Errorf("request stream config = age %s retention %s dupes %s", info.Config.MaxAge, info.Config.Retention, info.Config.Duplicates)
	}
}

// TestEnsureStreamsAllowsAtomicPublish: a notification stream made by an
// older release (no allow_atomic) is updated to allow atomic batches.
func TestEnsureStreamsAllowsAtomicPublish(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{})
	st, err := js.Stream(ctx, NotifyStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowAtomicPublish {
		t.Fatalf("new %s: allow_atomic off", NotifyStream)
	}
	cfg.AllowAtomicPublish = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(ctx, js, Config{}); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.AllowAtomicPublish {
		t.Errorf("updated %s: allow_atomic off", NotifyStream)
	}
}

func TestPublishDedupesByRequestID(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{})
	r := model.Request{ID: "r1", Model: "m", Function: "append", Args: json.RawMessage(`{}`)}
	a1, err := Publish(ctx, js, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := Publish(ctx, js, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Errorf("acks = %+v, %+v; want the retry flagged duplicate with the same sequence", a1, a2)
	}
	last, err := LastSeq(ctx, js, RequestStream, RequestSubject("m"))
	if err != nil || last != a1.Sequence {
		t.Errorf("LastSeq = %d, %v; want %d", last, err, a1.Sequence)
	}
}

// TestPublishRefusesATakenRequestID: JetStream dedupes Nats-Msg-Id over
// the whole request stream, so a request that reuses an id on another
// model, or on the same model with another function or args, would be
// dropped as a "duplicate" and never applied. Publish must say that the id
// is taken, and by what; a true retry (args spelled differently) stays a
// duplicate.
func TestPublishRefusesATakenRequestID(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{})
	first := model.Request{ID: "r1", Model: "m", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"a":1,"b":"x"}]}`)}
	a1, err := Publish(ctx, js, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	retry := first
	retry.Args = json.RawMessage(`{ "rows": [ {"b":"x", "a":1} ], "table": "t" }`)
	retry.Submitted = time.Now()
	if a, err := Publish(ctx, js, retry, nil); err != nil || !a.Duplicate || a.Sequence != a1.Sequence {
		t.Errorf("retry: %+v, %v; want a duplicate of sequence %d", a, err, a1.Sequence)
	}
	for name, r := range map[string]model.Request{
		"other model":    {ID: "r1", Model: "n", Function: "append", Args: first.Args},
		"other function": {ID: "r1", Model: "m", Function: "upsert", Args: first.Args},
		"other args":     {ID: "r1", Model: "m", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"a":2,"b":"x"}]}`)},
	} {
		_, err := Publish(ctx, js, r, nil)
		if !errors.Is(err, model.ErrConflict) {
			t.Errorf("%s: Publish = %v, want model.ErrConflict", name, err)
			continue
		}
		want := fmt.Sprintf("request id r1 is already used by model m function append (stream sequence %d)", a1.Sequence)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not say %q", name, err, want)
		}
	}
}

func TestLease(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{LeaseTTL: 2 * time.Second})
	l1, err := AcquireLease(ctx, js, "m", "one", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder waits.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = AcquireLease(wctx, js, "m", "two", 50*time.Millisecond)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second AcquireLease = %v, want it to wait until its context ends", err)
	}
	if err := l1.Renew(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2, err := AcquireLease(ctx, js, "m", "two", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Epoch() <= l1.Epoch() {
		t.Errorf("epochs %d then %d: a newer holder must have a larger epoch", l1.Epoch(), l2.Epoch())
	}
	// The old holder cannot renew: it must stop writing.
	if err := l1.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("stale renew = %v, want ErrLeaseLost", err)
	}
	// A holder that stops renewing loses the lease after the TTL.
	l3start := time.Now()
	l3, err := AcquireLease(ctx, js, "m", "three", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(l3start); waited < time.Second {
		t.Errorf("took over a live lease after %s", waited)
	}
	if l3.Epoch() <= l2.Epoch() {
		t.Errorf("epoch %d after %d", l3.Epoch(), l2.Epoch())
	}
	if err := l2.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("expired holder renew = %v, want ErrLeaseLost", err)
	}
}
