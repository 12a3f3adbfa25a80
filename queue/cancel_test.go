package queue

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/internal/natsembed"
)

// TestCancelledIDs: every recorded cancel of a model is listed, with ids
// a KV key could not hold (':' and dots) decoded back, and none of
// another model's.
func TestCancelledIDs(t *testing.T) {
	ctx := context.Background()
	js := setup(t, Config{})
	ids := []string{"01J:abc", "..x", "plain-id", "a.b.c"}
	for _, id := range ids {
		if err := RecordCancel(ctx, js, Cancel{RequestID: id, Model: "m1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := RecordCancel(ctx, js, Cancel{RequestID: "other", Model: "m10"}); err != nil {
		t.Fatal(err)
	}
	if err := RecordCancel(ctx, js, Cancel{RequestID: "plain-id", Model: "m1"}); err != nil { // again
		t.Fatal(err)
	}
	got, err := CancelledIDs(ctx, js, "m1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cancels of m1 (-want +got):\n%s", diff)
	}
	if err := RecordCancel(ctx, js, Cancel{RequestID: "bad id", Model: "m1"}); err == nil {
		t.Error("a bad request id was recorded")
	}
}

// BenchmarkCancelledIDs is the read a db-manager makes per batch, with
// n cancels of the model in the bucket.
func BenchmarkCancelledIDs(b *testing.B) {
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			js := setupB(b)
			for i := range n {
				RecordCancel(ctx, js, Cancel{RequestID: fmt.Sprint("id-", i), Model: "m"})
			}
			b.ResetTimer()
			for range b.N {
				if _, err := CancelledIDs(ctx, js, "m"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func setupB(b *testing.B) jetstream.JetStream {
	b.Helper()
	nc, js, err := Connect(natsembed.StartTest(b), "queue-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	if err := EnsureStreams(context.Background(), js, Config{}); err != nil {
		b.Fatal(err)
	}
	return js
}
