package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
)

// printPulled writes p as one JSON line, or its path (when following: with
// what it cost).
func (e *env) printPulled(p client.Pulled, asJSON, follow bool) {
	switch {
	case asJSON:
		b, _ := json.Marshal(p)
		fmt.Fprintln(e.stdout, string(b))
	case follow:
		fmt.Fprintf(e.stdout, "%s  version %d  fetched %s (%s downloaded), reused %s\n", p.Path, p.Version, humanize.IBytes(uint64(p.Fetched)), humanize.IBytes(uint64(p.Downloaded)), humanize.IBytes(uint64(p.Reused)))
	default:
		fmt.Fprintln(e.stdout, p.Path)
	}
}

// followPoll is how often pull --follow asks Postgres for a newer version
// besides the notifications: a safety net for a notification it missed.
const followPoll = 30 * time.Second

// follow keeps out at the latest version of model m: it pulls the latest,
// then again whenever an applied notification (or the poll) announces a
// newer one. Each version is built beside out, verified and renamed over
// it, reusing the current out; versions published during a build are
// skipped for the latest. It returns nil when ctx ends (out is then whole,
// at the last version pulled). A failure of the first pull is returned;
// later failures are printed and retried at the next notification or poll.
func (e *env) follow(ctx context.Context, d *session, m, out string, asJSON bool) error {
	if _, err := d.Ctl.GetModel(ctx, m); err != nil {
		return err
	}
	// Subscribe first: a version published after the first lookup is
	// announced.
	sub, err := d.client.Watch(ctx, m, notify.Start{})
	if err != nil {
		return err
	}
	defer sub.Stop()
	newer := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			n, err := sub.Next(gctx)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return withCode(ExitUnreachable, err)
			}
			if n.Status == model.StatusApplied {
				select {
				case newer <- struct{}{}:
				default: // one pending is enough: the puller takes the latest
				}
			}
		}
	})
	g.Go(func() error {
		tick := time.NewTicker(followPoll)
		defer tick.Stop()
		var have int64
		for first := true; ; first = false {
			err := func() error {
				v, err := d.Ctl.GetVersion(gctx, m, 0)
				if errors.Is(err, model.ErrNotFound) {
					return nil // no version yet, or all expired: wait
				}
				if err != nil {
					return withCode(ExitUnreachable, err)
				}
				if v.Version <= have {
					return nil
				}
				p, err := d.client.Pull(gctx, v, out)
				if err != nil {
					return err
				}
				have = v.Version
				e.printPulled(p, asJSON, true)
				return nil
			}()
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				if first {
					return err
				}
				fmt.Fprintf(e.stderr, "teactl: %v (%s kept; retrying at the next version or in %s)\n", err, out, followPoll)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-newer:
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}
