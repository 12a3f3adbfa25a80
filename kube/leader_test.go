package kube

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

func TestRunWithLeaderElection(t *testing.T) {
	client := fake.NewClientset()
	// The Lease stores its duration in whole seconds.
	timings := leaderTimings{lease: 2 * time.Second, renew: time.Second, retry: 50 * time.Millisecond}
	var mu sync.Mutex
	var leaders []string
	active := 0
	elect := func(ctx context.Context, id string) chan error {
		errc := make(chan error, 1)
		go func() {
			errc <- runWithLeaderElection(ctx, client, testNS, id, timings, func(ctx context.Context) error {
				mu.Lock()
				leaders = append(leaders, id)
				active++
				if active > 1 {
					t.Errorf("%s leads while another one does", id)
				}
				mu.Unlock()
				<-ctx.Done()
				time.Sleep(100 * time.Millisecond) // winding down
				mu.Lock()
				active--
				mu.Unlock()
				return nil
			})
		}()
		return errc
	}
	ctx1, cancel1 := context.WithCancel(t.Context())
	err1 := elect(ctx1, "pod-1")
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(leaders) == 1 })
	lease, err := client.CoordinationV1().Leases(testNS).Get(t.Context(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "pod-1" {
		t.Errorf("lease holder = %v, want pod-1", lease.Spec.HolderIdentity)
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	err2 := elect(ctx2, "pod-2")
	time.Sleep(500 * time.Millisecond) // pod-2 campaigns, does not lead
	mu.Lock()
	if len(leaders) != 1 {
		t.Errorf("leaders = %v while pod-1 holds the lease", leaders)
	}
	mu.Unlock()
	cancel1() // pod-1 shuts down, releases the lease after run returned
	if err := <-err1; err != nil {
		t.Error(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(leaders) == 2 })
	if got := strings.Join(leaders, ","); got != "pod-1,pod-2" {
		t.Errorf("leaders = %s, want pod-1,pod-2", got)
	}
	cancel2()
	if err := <-err2; err != nil {
		t.Error(err)
	}
}

// TestLeaderReleasesLeaseWhenDispatchFails: a leading dispatcher whose
// consumer is deleted under it (real NATS and Postgres, StatefulSets on
// the fake clientset) ends: RunWithLeaderElection returns the error, so
// the process exits, and the Lease is released for another replica.
func TestLeaderReleasesLeaseWhenDispatchFails(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	client := fake.NewClientset()
	r := newTestRunner(t, client, nil)
	d := dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, r)
	timings := leaderTimings{lease: 2 * time.Second, renew: time.Second, retry: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runWithLeaderElection(ctx, client, testNS, "pod-1", timings, d.Run) }()
	holder := func() string {
		lease, err := client.CoordinationV1().Leases(testNS).Get(t.Context(), LeaseName, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	waitFor(t, func() bool { return holder() == "pod-1" })
	// Once its pull request waits on the server, the leader consumes.
	waitFor(t, func() bool {
		c, err := s.JS.Consumer(ctx, queue.RequestStream, queue.DispatcherName)
		return err == nil && c.CachedInfo().NumWaiting > 0
	})
	if err := s.JS.DeleteConsumer(ctx, queue.RequestStream, queue.DispatcherName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Errorf("RunWithLeaderElection = %v, want the consumer deleted error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leader still runs 30 s after its consumer was deleted")
	}
	if h := holder(); h != "" {
		t.Errorf("lease holder = %q after the leader failed, want it released", h)
	}
}
