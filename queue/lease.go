package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseLost is returned by Lease.Renew when another holder took the lease
// or it expired: the holder must stop writing at once.
var ErrLeaseLost = errors.New("queue: writer lease lost")

// Lease is the writer lease of one model: a key in the KV bucket
// teatree-writers. Create acquires it, a compare-and-set update renews it,
// and the KV revision at acquisition is the fencing epoch: it grows with
// every acquisition, so a newer writer always has a larger epoch. The
// bucket's TTL ends a lease whose holder stopped renewing.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	epoch  uint64
	rev    uint64
	ttl    time.Duration
}

// AcquireLease waits until it holds the writer lease of model m, polling
// every poll, and returns it. holder identifies this process (host and pid)
// and is stored as the value. It returns ctx.Err() when ctx ends first.
func AcquireLease(ctx context.Context, js jetstream.JetStream, m, holder string, poll time.Duration) (*Lease, error) {
	kv, err := js.KeyValue(ctx, WritersBucket)
	if err != nil {
		return nil, fmt.Errorf("queue: lease bucket: %w", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("queue: lease bucket status: %w", err)
	}
	for {
		rev, err := kv.Create(ctx, m, []byte(holder))
		if err == nil {
			return &Lease{kv: kv, key: m, holder: holder, epoch: rev, rev: rev, ttl: st.TTL()}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("queue: acquire lease %s: %w", m, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Epoch is the fencing epoch: the KV revision at acquisition.
func (l *Lease) Epoch() uint64 { return l.epoch }

// TTL is the lease time-to-live; renew well within it.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Renew extends the lease by a compare-and-set update on the last revision.
// It returns ErrLeaseLost if the key changed or expired meanwhile.
func (l *Lease) Renew(ctx context.Context) error {
	rev, err := l.kv.Update(ctx, l.key, []byte(l.holder), l.rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%w: %v", ErrLeaseLost, err)
		}
		return fmt.Errorf("queue: renew lease %s: %w", l.key, err)
	}
	l.rev = rev
	return nil
}

// Keep renews the lease every TTL/3 until ctx ends (it then returns nil) or
// the lease is lost or cannot be renewed before it would expire (it then
// returns an error wrapping ErrLeaseLost).
func (l *Lease) Keep(ctx context.Context) error {
	interval := l.ttl / 3
	lastOK := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Renewing after the TTL could recreate a lease someone else
		// may already hold; stop instead.
		if time.Since(lastOK) >= l.ttl {
			return fmt.Errorf("%w: not renewed for %s", ErrLeaseLost, time.Since(lastOK).Round(time.Millisecond))
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		err := l.Renew(rctx)
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case errors.Is(err, ErrLeaseLost):
			return err
		case ctx.Err() != nil:
			return nil
		}
	}
}

// Release deletes the lease if it is still ours, so the next writer need
// not wait for the TTL.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		return fmt.Errorf("queue: release lease %s: %w", l.key, err)
	}
	return nil
}
