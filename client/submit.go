package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/telemetry"
)

// Receipt is what Submit returns: the request as the request stream holds
// it. Keep it to Wait for the request later.
type Receipt struct {
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
	Function  string `json:"function"`
	// Seq is the request's sequence in stream TEATREE_REQUESTS: the one
	// of the first submit when Duplicate.
	Seq uint64 `json:"stream_seq"`
	// Duplicate is set when the stream already held this request (a
	// retry with the same id, model, function and args within the dedupe
	// window): nothing new was queued.
	Duplicate bool `json:"duplicate"`
	// Submitted is the request's submit time (the client's clock, just
	// before it was sent); zero for a Duplicate. Wait starts from it when
	// it cannot read the request stream.
	Submitted time.Time `json:"submitted,omitzero"`
}

// Submit queues request r on its model's request subject
// (teatree.req.<model>) and returns when JetStream has stored it (the
// PubAck): durably queued, not yet applied; Wait tells the outcome.
//
// r.ID defaults to a new UUIDv7 (give one to make a retry the same
// request), r.Submitted to now. Args are inline JSON; for a large file
// use SubmitFile. The W3C trace context of ctx travels in the message
// headers.
//
// Errors: model.ErrInvalid for a request refused before anything is sent
// (bad model id, unknown function, args that do not validate, too large);
// model.ErrConflict when r.ID is already the id of a different request;
// ErrUnreachable when NATS did not store it.
func (c *Client) Submit(ctx context.Context, r model.Request) (Receipt, error) {
	r, err := Prepare(r)
	if err != nil {
		return Receipt{}, err
	}
	js, err := c.js()
	if err != nil {
		return Receipt{}, err
	}
	ctx, span := otel.Tracer("github.com/teatree/teatree/client").Start(ctx, "submit "+r.Function)
	defer span.End()
	h := nats.Header{}
	telemetry.Inject(ctx, h)
	ack, err := queue.Publish(ctx, js, r, h)
	if err != nil {
		if errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrConflict) {
			return Receipt{}, err
		}
		return Receipt{}, unreachable(err)
	}
	rc := Receipt{RequestID: r.ID, Model: r.Model, Function: r.Function, Seq: ack.Sequence, Duplicate: ack.Duplicate}
	if !ack.Duplicate {
		rc.Submitted = r.Submitted
	}
	return rc, nil
}

// Prepare returns r as Submit sends it, or the error Submit would return
// before sending anything: r.ID defaults to a new UUIDv7, r.Submitted to
// now (UTC), and the request is checked (model id, function, args, size)
// with the code the dispatcher uses. It needs no connection: teactl calls
// it before connecting.
//
// Errors: model.ErrInvalid.
func Prepare(r model.Request) (model.Request, error) {
	if r.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return r, err
		}
		r.ID = id.String()
	}
	if r.Submitted.IsZero() {
		r.Submitted = time.Now().UTC()
	}
	// Refuse here what can be known here; the dispatcher checks again
	// (with the model's settings) and announces what only it can know.
	data, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if _, err := model.DecodeRequest(data); err != nil {
		return r, err
	}
	if err := functions.ValidateRequest(r, true); err != nil {
		return r, err
	}
	return r, nil
}

// FileOptions are the options of SubmitFile.
type FileOptions struct {
	// ID is the request id; default a new UUIDv7.
	ID string
	// Format is parquet, csv, json or arrow; default: from the file's
	// extension (.parquet, .csv, .json/.ndjson/.jsonl, .arrow/.ipc/
	// .feather; CSV and JSON may end in .gz or .zst), else from its
	// content.
	Format string
	// NoCreate fails the request when the table does not exist instead
	// of creating it from the file's schema.
	NoCreate bool
}

// SubmitFile stages the local file at path in the object store under
// staging/<model>/<request_id>/<name> and submits an append of it to
// table of model m: large files never travel through NATS. A file whose
// name does not tell its format is recognised by its content and staged
// under its name plus the extension found (data → data.csv.gz). It is
// PrepareFile, Stage and Submit.
//
// Errors: as PrepareFile, Stage, then Submit.
func (c *Client) SubmitFile(ctx context.Context, m, table, path string, o FileOptions) (Receipt, error) {
	f, err := PrepareFile(m, table, path, o)
	if err != nil {
		return Receipt{}, err
	}
	if _, err := c.js(); err != nil { // nothing is staged for a request that cannot be sent
		return Receipt{}, err
	}
	if err := c.Stage(ctx, f); err != nil {
		return Receipt{}, err
	}
	return c.Submit(ctx, f.Request)
}

// FileRequest is an append of a local file, checked and ready to stage.
type FileRequest struct {
	Request model.Request // the append request (payload.uri is Key), for Submit
	Path    string        // the local file
	Key     string        // where Stage puts it: staging/<model>/<request_id>/<name>
}

// PrepareFile checks an append of the local file at path to table of model
// m and returns it, ready for Stage and Submit. It reads the file's first
// bytes when its name does not tell the format, and needs no connection:
// teactl calls it before connecting.
//
// Errors: model.ErrInvalid for a bad model id, a missing file, a
// directory, a file of no known format or args that do not validate.
func PrepareFile(m, table, path string, o FileOptions) (FileRequest, error) {
	if err := model.ValidateID(m); err != nil {
		return FileRequest{}, err
	}
	// The server infers the format from the extension too; a format is
	// sent only when given, so that its errors can say where the format
	// came from.
	payload := map[string]string{}
	if o.Format != "" {
		payload["format"] = o.Format
	}
	st, err := os.Stat(path)
	if err != nil {
		return FileRequest{}, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	if st.IsDir() {
		return FileRequest{}, fmt.Errorf("%w: %s is a directory", model.ErrInvalid, path)
	}
	name, err := stagedName(path, o.Format)
	if err != nil {
		return FileRequest{}, err
	}
	if o.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return FileRequest{}, err
		}
		o.ID = id.String()
	}
	key := model.StagingPrefix(m, o.ID) + name
	payload["uri"] = key
	a := map[string]any{"table": table, "payload": payload}
	if o.NoCreate {
		a["create"] = false
	}
	args, err := json.Marshal(a)
	if err != nil {
		return FileRequest{}, err
	}
	r := model.Request{ID: o.ID, Model: m, Function: "append", Args: args}
	if err := functions.ValidateRequest(r, false); err != nil {
		return FileRequest{}, err
	}
	return FileRequest{Request: r, Path: path, Key: key}, nil
}

// Stage uploads the file of f to the object store at f.Key, where only
// f.Request may use it.
//
// Errors: ErrUnreachable when the object store failed.
func (c *Client) Stage(ctx context.Context, f FileRequest) error {
	store, err := c.store()
	if err != nil {
		return err
	}
	if err := objstore.PutFile(ctx, store, f.Key, f.Path); err != nil {
		return unreachable(err)
	}
	return nil
}

// Wait blocks until the final notification (applied, failed or rejected)
// of the request of r comes, and returns it: a failed or rejected request
// is a notification with that Status and its Error, not an error of
// Wait. It finds the notification however long ago the request was
// submitted, as long as stream TEATREE_NOTIFY retains it (7 days by
// default): it reads the model's notifications from the time stream
// TEATREE_REQUESTS stored the request (less Options.ClockSkew), or from
// the oldest retained one when the request stream no longer holds it. A
// client that may not read the request stream (NATS permissions: clients
// may be allowed only teatree.req.> and teatree.notify.>) starts from
// r.Submitted less the skew, or for a duplicate from the oldest retained
// notification. Of
// the notifications for r.RequestID it returns the one of r.Seq (another
// request reusing the id is announced as rejected under its own stream
// sequence).
//
// Errors: ctx's error when ctx ends first (the request stays queued);
// model.ErrInvalid for a receipt without a model, id or stream sequence;
// ErrUnreachable when NATS fails.
func (c *Client) Wait(ctx context.Context, r Receipt) (model.Notification, error) {
	if r.Seq == 0 || r.RequestID == "" || model.ValidateID(r.Model) != nil {
		return model.Notification{}, fmt.Errorf("%w: wait: the receipt names no request (model %q, id %q, stream sequence %d)", model.ErrInvalid, r.Model, r.RequestID, r.Seq)
	}
	start, err := c.waitStart(ctx, r)
	if err != nil {
		return model.Notification{}, err
	}
	js, err := c.js()
	if err != nil {
		return model.Notification{}, err
	}
	sub, err := notify.Subscribe(ctx, js, r.Model, start)
	if err != nil {
		return model.Notification{}, c.waitErr(ctx, err)
	}
	defer sub.Stop()
	for {
		n, err := sub.Wait(ctx, r.RequestID)
		if err != nil {
			return n, c.waitErr(ctx, err)
		}
		// Ours is the notification of our stream sequence, not that of
		// another request under the same id.
		if n.Seq == 0 || n.Seq == r.Seq {
			return n, nil
		}
	}
}

func (c *Client) waitErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return unreachable(err)
}

// lookupTimeout bounds the read of the request's message in Wait: a
// client without permission to read the request stream gets no answer.
const lookupTimeout = 5 * time.Second

// waitStart is where Wait reads the notifications of r from: the time the
// request stream stored r's message, less the clock skew; every
// notification when that message is gone (expired). When the stream
// cannot be read, r.Submitted less the skew, or every notification. It
// does not depend on when Wait is called.
func (c *Client) waitStart(ctx context.Context, r Receipt) (notify.Start, error) {
	js, err := c.js()
	if err != nil {
		return notify.Start{}, err
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	msg, err := requestMsg(lctx, js, r.Seq)
	switch {
	case err == nil:
		if m := queue.ModelOf(msg.Subject); m != r.Model {
			return notify.Start{}, fmt.Errorf("%w: wait: stream sequence %d is a request of %q, not of model %s", model.ErrInvalid, r.Seq, m, r.Model)
		}
		return notify.Start{Time: msg.Time.Add(-c.opts.ClockSkew)}, nil
	case ctx.Err() != nil:
		return notify.Start{}, ctx.Err()
	case errors.Is(err, jetstream.ErrMsgNotFound) || r.Submitted.IsZero():
		return notify.Start{All: true}, nil
	}
	return notify.Start{Time: r.Submitted.Add(-c.opts.ClockSkew)}, nil
}

// requestMsg reads the message at seq of the request stream.
func requestMsg(ctx context.Context, js jetstream.JetStream, seq uint64) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, queue.RequestStream)
	if err != nil {
		return nil, err
	}
	return s.GetMsg(ctx, seq)
}

// Watch reads the notifications of model m from start on (notify.Start{}:
// only new ones; All: every one the stream retains; Time: those stored
// at or after it), in stream order, until the subscription is stopped.
// Call Next on it for each notification, and Stop when done.
//
// Errors: model.ErrInvalid for a bad model id; ErrUnreachable when NATS
// fails.
func (c *Client) Watch(ctx context.Context, m string, start notify.Start) (*notify.Subscription, error) {
	if err := model.ValidateID(m); err != nil {
		return nil, err
	}
	js, err := c.js()
	if err != nil {
		return nil, err
	}
	sub, err := notify.Subscribe(ctx, js, m, start)
	if err != nil {
		return nil, unreachable(err)
	}
	return sub, nil
}
