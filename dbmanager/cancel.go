package dbmanager

import (
	"context"
	"errors"
	"fmt"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// errCancelled is the error recorded with a cancelled request.
var errCancelled = errors.New("cancelled (teactl cancel) before it was applied")

// markCancelled marks the items of a batch about to be applied whose
// request has a cancel in queue.CancelsBucket: they are recorded with
// status cancelled in the batch's transaction and not applied. The bucket
// is read once per attempt at the batch, after the items are decoded and
// before anything of the batch is applied: a cancel recorded before that
// read wins, one recorded after it loses to the apply (docs/decisions.md,
// "Cancel"). The decision is exactly-once like an apply: it is committed
// with the position, and a redelivery is skipped by it. A read error is
// transient: the batch is retried.
func (m *Manager) markCancelled(ctx context.Context, items []*item) error {
	if m.beforeCancelRead != nil {
		m.beforeCancelRead()
	}
	pending := false
	for _, it := range items {
		if !it.skip && it.status == "" {
			pending = true
			break
		}
	}
	if !pending {
		return nil
	}
	ids, err := queue.CancelledIDs(ctx, m.js, m.cfg.Model)
	if err != nil {
		return transientError{fmt.Errorf("dbmanager: %w", err)}
	}
	if m.afterCancelRead != nil {
		m.afterCancelRead()
	}
	for _, it := range items {
		if !it.skip && it.status == "" && ids[it.req.ID] {
			it.status, it.err = model.StatusCancelled, errCancelled
			m.log.Info("request cancelled", "request_id", it.req.ID, "seq", it.seq, "function", it.req.Function)
		}
	}
	return nil
}
