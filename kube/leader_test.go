package kube

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/kubetest"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// testTimings are short leader election durations; the Lease stores its
// duration in whole seconds. client-go's leader gives up at most its renew
// deadline (plus a retry period) after the response of its last renewal,
// while a candidate takes over a lease duration after it saw that renewal
// written: the leaders cannot overlap only while a renewal's response is
// slower than its write by less than lease − renew − retry. 2 s of that
// margin is for a loaded 2-core machine (with 1 s, pod-2 led while pod-1
// still did in a make test run under load).
var testTimings = leaderTimings{lease: 4 * time.Second, renew: 2 * time.Second, retry: 200 * time.Millisecond}

// mortalClient is a clientset whose requests fail once kill is called: to
// the API server, its dispatcher has died (no renewal, no release).
func mortalClient(t *testing.T, c *kubetest.Cluster) (kubernetes.Interface, func()) {
	t.Helper()
	var dead atomic.Bool
	cfg := rest.CopyConfig(c.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if dead.Load() {
				return nil, errors.New("dispatcher died")
			}
			return rt.RoundTrip(req)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client, func() { dead.Store(true) }
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func leaseHolder(t *testing.T, client kubernetes.Interface, ns string) string {
	lease, err := client.CoordinationV1().Leases(ns).Get(t.Context(), LeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// TestRunWithLeaderElection: on a real Lease, of two dispatchers one leads;
// when the leader dies (its requests fail: it neither renews nor releases)
// the other leads within the lease duration; a dispatcher that shuts down
// releases the Lease.
func TestRunWithLeaderElection(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "leader")
	var mu sync.Mutex
	leading := map[string]time.Time{}
	active := 0
	elect := func(ctx context.Context, client kubernetes.Interface, id string) chan error {
		errc := make(chan error, 1)
		go func() {
			errc <- runWithLeaderElection(ctx, client, ns, id, testTimings, func(ctx context.Context) error {
				mu.Lock()
				if _, ok := leading[id]; !ok {
					leading[id] = time.Now()
				}
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
	leads := func(id string) bool { mu.Lock(); defer mu.Unlock(); _, ok := leading[id]; return ok }

	client1, kill1 := mortalClient(t, c)
	ctx1, cancel1 := context.WithCancel(t.Context())
	defer cancel1()
	elect(ctx1, client1, "pod-1")
	waitFor(t, func() bool { return leads("pod-1") })
	if h := leaseHolder(t, c.Client, ns); h != "pod-1" {
		t.Errorf("lease holder = %q, want pod-1", h)
	}
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	err2 := elect(ctx2, c.Client, "pod-2")
	time.Sleep(time.Second) // pod-2 campaigns, does not lead
	if leads("pod-2") {
		t.Error("pod-2 leads while pod-1 holds the lease")
	}

	died := time.Now()
	kill1()
	waitFor(t, func() bool { return leads("pod-2") })
	mu.Lock()
	handover := leading["pod-2"].Sub(died)
	mu.Unlock()
	// The lease expires at most its duration after pod-1's last renewal,
	// and pod-2 looks every retry period.
	if limit := testTimings.lease + testTimings.retry + 500*time.Millisecond; handover > limit {
		t.Errorf("handover took %v after the leader died, want at most %v", handover, limit)
	}
	t.Logf("handover %v after the leader's death (lease %v)", handover, testTimings.lease)
	if h := leaseHolder(t, c.Client, ns); h != "pod-2" {
		t.Errorf("lease holder = %q, want pod-2", h)
	}

	cancel2()
	if err := <-err2; err != nil {
		t.Error(err)
	}
	if h := leaseHolder(t, c.Client, ns); h != "" {
		t.Errorf("lease holder = %q after pod-2 shut down, want the lease released", h)
	}
}

// TestLeaderReleasesLeaseWhenDispatchFails: a leading dispatcher whose
// consumer is deleted under it (real NATS, Postgres and API server) ends:
// RunWithLeaderElection returns the error, so the process exits, the Lease
// is released, and the other replica takes over and consumes.
func TestLeaderReleasesLeaseWhenDispatchFails(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "release")
	s := stacktest.New(t, queue.Config{})
	r := newTestRunner(t, c.Client, ns, nil)
	newDispatcher := func() *dispatcher.Dispatcher {
		return dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, r)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done1 := make(chan error, 1)
	go func() { done1 <- runWithLeaderElection(ctx, c.Client, ns, "pod-1", testTimings, newDispatcher().Run) }()
	waitFor(t, func() bool { return leaseHolder(t, c.Client, ns) == "pod-1" })
	consuming := func() bool {
		cons, err := s.JS.Consumer(ctx, queue.RequestStream, queue.DispatcherName)
		return err == nil && cons.CachedInfo().NumWaiting > 0
	}
	// Once its pull request waits on the server, the leader consumes.
	waitFor(t, consuming)
	done2 := make(chan error, 1)
	go func() { done2 <- runWithLeaderElection(ctx, c.Client, ns, "pod-2", testTimings, newDispatcher().Run) }()

	if err := s.JS.DeleteConsumer(ctx, queue.RequestStream, queue.DispatcherName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done1:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Errorf("RunWithLeaderElection = %v, want the consumer deleted error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leader still runs 30 s after its consumer was deleted")
	}
	// Released, not expired: pod-2 leads well within the lease duration.
	released := time.Now()
	waitFor(t, func() bool { return leaseHolder(t, c.Client, ns) == "pod-2" })
	if took := time.Since(released); took > testTimings.lease {
		t.Errorf("pod-2 took over %v after pod-1 failed, want less than the lease duration %v", took, testTimings.lease)
	}
	waitFor(t, consuming)
	cancel()
	if err := <-done2; err != nil {
		t.Error(err)
	}
}
