package kube

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the coordination.k8s.io Lease the dispatchers elect their
// leader on.
const LeaseName = "teatree-dispatcher"

// leaderTimings are the leader election's durations: client-go's usual
// 15 s lease, 10 s renew deadline, 2 s retry period.
type leaderTimings struct{ lease, renew, retry time.Duration }

var defaultLeaderTimings = leaderTimings{lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second}

// RunWithLeaderElection campaigns for the Lease "teatree-dispatcher" in
// namespace as identity (the pod name) and calls run while it leads, with a
// context that ends when leadership is lost or ctx ends. The lease is
// released only after run has returned, so two dispatchers do not
// reconcile at once (a short overlap after a missed renewal would be
// harmless: Ensure and Stop are idempotent and the NATS writer lease is
// the fence). After losing the lease it campaigns again.
//
// It returns nil when ctx ends. If run returns an error, it releases the
// lease at once (another replica takes over) and returns that error, so
// the process exits and its supervisor restarts it; it also returns an
// error if the election cannot be set up.
func RunWithLeaderElection(ctx context.Context, client kubernetes.Interface, namespace, identity string, run func(ctx context.Context) error) error {
	return runWithLeaderElection(ctx, client, namespace, identity, defaultLeaderTimings, run)
}

func runWithLeaderElection(ctx context.Context, client kubernetes.Interface, namespace, identity string, t leaderTimings, run func(ctx context.Context) error) error {
	var l leader
	defer l.close()
	for ctx.Err() == nil {
		if err := l.leadOnce(ctx, client, namespace, identity, t, run); err != nil {
			return err
		}
	}
	return nil
}

// leader owns the calls of run: at most one at a time, none after close.
// client-go starts run in a goroutine it does not wait for.
type leader struct {
	mu     sync.Mutex // held while run runs
	closed bool
	err    error // what the last run returned
}

// close waits for a running run and prevents further ones.
func (l *leader) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// leadOnce campaigns once and leads until leadership is lost, ctx ends or
// run fails; it returns run's error.
func (l *leader) leadOnce(ctx context.Context, client kubernetes.Interface, namespace, identity string, t leaderTimings, run func(ctx context.Context) error) error {
	// The election outlives ctx while run winds down: electCancel ends it
	// once run has returned, and that releases the lease.
	electCtx, electCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer electCancel()
	var leading atomic.Bool
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: namespace},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
		},
		Name:            LeaseName,
		LeaseDuration:   t.lease,
		RenewDeadline:   t.renew,
		RetryPeriod:     t.retry,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				l.mu.Lock()
				defer l.mu.Unlock()
				defer electCancel()
				if l.closed || lctx.Err() != nil {
					return
				}
				leading.Store(true)
				rctx, cancel := context.WithCancel(lctx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				l.err = run(rctx)
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("kube: leader election: %w", err)
	}
	// When ctx ends before this dispatcher leads, stop campaigning; when
	// it leads, run's context ends and OnStartedLeading ends the election.
	defer context.AfterFunc(ctx, func() {
		if !leading.Load() {
			electCancel()
		}
	})()
	le.Run(electCtx)
	l.mu.Lock()
	defer l.mu.Unlock()
	err, l.err = l.err, nil
	return err
}
