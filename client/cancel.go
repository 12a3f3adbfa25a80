package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// Cancelled is what Cancel did.
type Cancelled struct {
	// Receipt names the request: its model and id, and its stream
	// sequence when the request log holds it (0 otherwise: Wait cannot
	// wait for it then; teactl status tells the outcome later).
	Receipt Receipt
	// Final is the request's record when it had a final status already
	// (applied in Final.Version, failed, rejected or cancelled): no cancel
	// was recorded, it is too late.
	Final *controldb.RequestRecord
}

// Cancel cancels the queued request id of model m (m may be empty when
// Options.Control is set: the request log names the request's model). It
// records the cancel in the KV bucket teatree-cancels, which the
// db-manager reads before it applies each batch, and returns; Wait on
// the returned Receipt tells the outcome: status cancelled, or applied
// (the db-manager read the bucket for the request's batch before the
// cancel was recorded: too late). A request the request log records as
// final already is not cancelled: Cancelled.Final holds its record.
//
// Errors: model.ErrInvalid for a bad id or model, or a model that is not
// the request's; model.ErrNotFound when m is empty and the request log
// does not hold the request (not submitted, or not yet seen by the
// dispatcher: name the model); ErrUnreachable when NATS or Postgres fail.
func (c *Client) Cancel(ctx context.Context, m, id string) (Cancelled, error) {
	if err := model.ValidateRequestID(id); err != nil {
		return Cancelled{}, err
	}
	if m != "" {
		if err := model.ValidateID(m); err != nil {
			return Cancelled{}, err
		}
	}
	rc := Receipt{RequestID: id, Model: m}
	if c.opts.Control != nil {
		rec, err := c.opts.Control.GetRequest(ctx, id)
		switch {
		case errors.Is(err, model.ErrNotFound):
			if m == "" {
				return Cancelled{}, fmt.Errorf("%w: request %s is not in the request log (not submitted, or not yet seen by the dispatcher): name its model to cancel it anyway", model.ErrNotFound, id)
			}
		case err != nil:
			return Cancelled{}, unreachable(err)
		case m != "" && rec.Model != m:
			return Cancelled{}, fmt.Errorf("%w: request %s is a request of model %s, not of %s", model.ErrInvalid, id, rec.Model, m)
		default:
			rc.Model, rc.Function, rc.Seq = rec.Model, rec.Function, rec.StreamSeq
			if rec.Status.Final() {
				return Cancelled{Receipt: rc, Final: &rec}, nil
			}
		}
	}
	if rc.Model == "" {
		return Cancelled{}, fmt.Errorf("%w: cancel %s: name the request's model (no Postgres to look it up)", model.ErrInvalid, id)
	}
	js, err := c.js()
	if err != nil {
		return Cancelled{}, err
	}
	if err := queue.RecordCancel(ctx, js, queue.Cancel{RequestID: id, Model: rc.Model, At: time.Now().UTC()}); err != nil {
		if errors.Is(err, model.ErrInvalid) {
			return Cancelled{}, err
		}
		return Cancelled{}, unreachable(err)
	}
	return Cancelled{Receipt: rc}, nil
}
