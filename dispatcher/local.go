package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// LocalRunner runs each db-manager as a child process: Command followed by
// "--model <m>", with Env added to this process's environment. A child that
// exits with an error is restarted with exponential backoff (1 s doubling
// to 30 s, reset after a minute of running). Children get SIGTERM when this
// process dies (Linux parent-death signal), so an orphan cannot keep a
// model's lease.
type LocalRunner struct {
	Command []string
	Env     []string
	Log     *slog.Logger
	// Grace is how long Stop waits after SIGTERM before SIGKILL; default 30s.
	Grace time.Duration

	mu    sync.Mutex
	procs map[string]*child
	wg    sync.WaitGroup
}

type child struct {
	cancel context.CancelFunc
	done   chan struct{}
}

var _ Runner = (*LocalRunner)(nil)

// Ensure starts a supervised child for m unless one runs.
func (r *LocalRunner) Ensure(_ context.Context, m string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.procs == nil {
		r.procs = map[string]*child{}
	}
	if _, ok := r.procs[m]; ok {
		return nil
	}
	if len(r.Command) == 0 {
		return fmt.Errorf("dispatcher: no db-manager command configured")
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &child{cancel: cancel, done: make(chan struct{})}
	r.procs[m] = c
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(c.done)
		r.supervise(ctx, m)
		r.mu.Lock()
		if r.procs[m] == c {
			delete(r.procs, m)
		}
		r.mu.Unlock()
	}()
	return nil
}

func (r *LocalRunner) supervise(ctx context.Context, m string) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second), backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
	grace := r.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	for ctx.Err() == nil {
		args := append(append([]string{}, r.Command[1:]...), "--model", m)
		cmd := exec.CommandContext(ctx, r.Command[0], args...)
		cmd.Env = append(os.Environ(), r.Env...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = grace
		started := time.Now()
		r.Log.Info("starting db-manager", "model", m)
		err := cmd.Run()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.Log.Info("db-manager exited", "model", m)
			return
		}
		if time.Since(started) > time.Minute {
			b.Reset()
		}
		d := b.NextBackOff()
		r.Log.Warn("db-manager crashed, restarting", "model", m, "err", err, "in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// Stop stops the db-manager of m (SIGTERM, then SIGKILL after Grace) and
// waits for it, or for ctx.
func (r *LocalRunner) Stop(ctx context.Context, m string) error {
	r.mu.Lock()
	c, ok := r.procs[m]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	c.cancel()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running lists the models with a supervised child, sorted. It never
// fails.
func (r *LocalRunner) Running(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.procs))
	for m := range r.procs {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}

// Close stops every child and waits for them.
func (r *LocalRunner) Close() {
	r.mu.Lock()
	for _, c := range r.procs {
		c.cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
