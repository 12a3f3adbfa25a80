// Package notify publishes and reads teatree's notifications: one JSON
// model.Notification per request outcome (applied, failed, rejected) on
// subject teatree.notify.<model> of stream TEATREE_NOTIFY.
//
// A notification's Nats-Msg-Id is "<request_id>:<status>:<stream_seq>", so
// a publisher that repeats a publication after a crash is deduplicated by
// JetStream within the dedupe window (10 minutes by default), while a
// later request that reuses the id (refused: rejected) is still announced. Readers should still
// treat notifications idempotently: a repeat after a longer outage is
// possible (at-least-once delivery).
//
// # Atomic batches
//
// PublishAll sends the notifications of one version (or one dispatcher
// round) as JetStream atomic batches (ADR-50, nats-server 2.12+; the
// stream has allow_atomic): a batch is stored whole or not at all, in one
// write (nats-server 2.15 syncs an atomic batch on a single-replica file
// stream once, nats-io/nats-server#8539), and it costs two round trips
// instead of one PubAck per notification. nats.go v1.55 has no batch
// publish API, so the batch is the ADR's headers on ordinary messages:
// Nats-Batch-Id (a fresh NUID per attempt, at most 64 bytes),
// Nats-Batch-Sequence 1..n and Nats-Batch-Commit: 1 on the last, which the
// server answers with the PubAck; the first message and every
// [batchAckEvery]-th are requests (the server acknowledges them with an
// empty reply), the others plain publishes.
//
// Limits, from nats-server 2.15.2 (server/stream.go, the
// streamDefaultMaxAtomicBatch* constants; ADR-50): at most [MaxBatch]
// (1000) messages per batch (server option jetstream.limits.max_batch_size;
// teatree assumes the default), 50 open batches per stream, 1000 per
// server, and a batch without traffic for 10 s is abandoned. Longer lists
// are split into batches of MaxBatch, published in order: each batch is
// atomic, the list as a whole is not (a crash between two batches leaves
// the first stored; the retry stores the rest).
//
// Nats-Msg-Id is allowed inside an atomic batch, but one duplicate (of a
// stored message or inside the batch) refuses the whole batch
// (JSAtomicPublishContainsDuplicateMessageErr, 10201). That is what a
// retried publication after a crash sees, so on that refusal, and on the
// others that say the batch was not stored for a reason that one message
// at a time does not share (atomic publish disabled on the stream: an
// older process updated it; too many open batches; incomplete batch), the
// batch is published again one message at a time with the same ids:
// JetStream drops the duplicates and stores the rest once. Other refusals
// (a message too large, for example) are returned and store nothing.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// Publisher publishes notifications.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// Publish publishes n and waits for the PubAck.
func (p *Publisher) Publish(ctx context.Context, n model.Notification) error {
	msg, err := message(n)
	if err != nil {
		return err
	}
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID(n))); err != nil {
		return fmt.Errorf("notify: publish %s %s: %w", n.Status, n.RequestID, err)
	}
	return nil
}

// MaxBatch is the largest number of messages PublishAll puts in one atomic
// batch: nats-server's default limit (streamDefaultMaxAtomicBatchSize,
// 1000 in 2.12 to 2.15; ADR-50).
const MaxBatch = 1000

// batchAckEvery is how often an intermediate batch message is a request:
// the server's empty acknowledgement is flow control and reports a refused
// batch early.
const batchAckEvery = 100

// Batch headers of ADR-50 (nats-server server/stream.go JSBatchId,
// JSBatchSeq, JSBatchCommit).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// JetStream error codes (nats-server server/errors.json) on which a batch
// is published again one message at a time: each says the batch stored
// nothing, for a reason single publishes do not share.
const (
	errAtomicDisabled    jetstream.ErrorCode = 10174 // JSAtomicPublishDisabledErr
	errAtomicIncomplete  jetstream.ErrorCode = 10176 // JSAtomicPublishIncompleteBatchErr
	errAtomicDuplicate   jetstream.ErrorCode = 10201 // JSAtomicPublishContainsDuplicateMessageErr
	errAtomicInflight    jetstream.ErrorCode = 10210 // JSAtomicPublishTooManyInflight
	errDuplicateConflict jetstream.ErrorCode = 10158 // JSStreamDuplicateMessageConflict
)

// PublishAll publishes ns in order as atomic batches of at most MaxBatch
// messages (see the package doc) and returns when every batch is
// acknowledged. A batch refused as a whole for a duplicate Nats-Msg-Id (a
// repeated publication), because atomic publishing is disabled on the
// stream, because the server has too many open batches, or because it came
// incomplete, is published one message at a time instead, so a repeat
// stores no duplicate. Any other refusal is returned (a
// *jetstream.APIError) and stores none of that batch.
func (p *Publisher) PublishAll(ctx context.Context, ns []model.Notification) error {
	for len(ns) > 0 {
		n := min(len(ns), MaxBatch)
		if err := p.publishBatch(ctx, ns[:n]); err != nil {
			return err
		}
		ns = ns[n:]
	}
	return nil
}

// publishBatch publishes ns (at most MaxBatch) as one atomic batch, or one
// by one when the batch is refused as a whole for a reason listed above.
func (p *Publisher) publishBatch(ctx context.Context, ns []model.Notification) error {
	if len(ns) == 1 {
		return p.Publish(ctx, ns[0])
	}
	err := p.atomic(ctx, ns)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errAtomicDisabled, errAtomicIncomplete, errAtomicDuplicate, errAtomicInflight, errDuplicateConflict:
			return p.publishEach(ctx, ns)
		}
	}
	return err
}

// batchAck is the PubAck of a batch commit (ADR-50 adds batch and count).
type batchAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// atomic publishes ns as one atomic batch with a fresh batch id. A refusal
// is returned as a *jetstream.APIError.
func (p *Publisher) atomic(ctx context.Context, ns []model.Notification) error {
	nc := p.js.Conn()
	id := nuid.Next()
	last := ns[len(ns)-1]
	for i, n := range ns {
		msg, err := message(n)
		if err != nil {
			return err
		}
		seq := i + 1
		msg.Header = nats.Header{}
		msg.Header.Set(jetstream.MsgIDHeader, msgID(n))
		msg.Header.Set(batchIDHeader, id)
		msg.Header.Set(batchSeqHeader, strconv.Itoa(seq))
		commit := seq == len(ns)
		if commit {
			msg.Header.Set(batchCommitHeader, "1")
		}
		if !commit && seq != 1 && seq%batchAckEvery != 0 {
			if err := nc.PublishMsg(msg); err != nil {
				return fmt.Errorf("notify: publish batch %s of %d (%s %s): %w", id, len(ns), n.Status, n.RequestID, err)
			}
			continue
		}
		resp, err := p.request(ctx, nc, msg)
		if err != nil {
			return fmt.Errorf("notify: publish batch %s of %d (%s %s): %w", id, len(ns), n.Status, n.RequestID, err)
		}
		if !commit && len(resp.Data) == 0 {
			continue
		}
		var ack batchAck
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return fmt.Errorf("notify: publish batch %s: bad PubAck %q: %w", id, resp.Data, err)
		}
		if ack.Error != nil {
			return fmt.Errorf("notify: publish batch %s of %d (%s %s): %w", id, len(ns), n.Status, n.RequestID, ack.Error)
		}
		if !commit {
			return fmt.Errorf("notify: publish batch %s: PubAck before the commit: %q", id, resp.Data)
		}
		if ack.Batch != id || ack.Count != len(ns) {
			return fmt.Errorf("notify: publish batch %s of %d (last %s): PubAck for batch %q of %d", id, len(ns), last.RequestID, ack.Batch, ack.Count)
		}
	}
	return nil
}

// request sends msg and waits for the reply, within the JetStream
// context's default timeout (5 s unless set) when ctx has no deadline, as
// jetstream's own publishes do.
func (p *Publisher) request(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.js.Options().DefaultTimeout)
		defer cancel()
	}
	return nc.RequestMsgWithContext(ctx, msg)
}

// publishEach publishes ns asynchronously, one message each, and waits for
// every PubAck: one round trip per window of outstanding publishes.
func (p *Publisher) publishEach(ctx context.Context, ns []model.Notification) error {
	futures := make([]jetstream.PubAckFuture, 0, len(ns))
	for _, n := range ns {
		msg, err := message(n)
		if err != nil {
			return err
		}
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID(n)))
		if err != nil {
			return fmt.Errorf("notify: publish %s %s: %w", n.Status, n.RequestID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("notify: publish %s %s: %w", ns[i].Status, ns[i].RequestID, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// msgID is the Nats-Msg-Id of n: one per request (its stream sequence)
// and status.
func msgID(n model.Notification) string {
	return n.RequestID + ":" + string(n.Status) + ":" + strconv.FormatUint(n.Seq, 10)
}

func message(n model.Notification) (*nats.Msg, error) {
	data, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("notify: encode: %w", err)
	}
	return &nats.Msg{Subject: queue.NotifySubject(n.Model), Data: data}, nil
}

// Decode decodes a notification message body.
func Decode(data []byte) (model.Notification, error) {
	var n model.Notification
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("%w: notification: %v", model.ErrInvalid, err)
	}
	return n, nil
}

// Start says where a Watch begins.
type Start struct {
	// Time, when set, starts at the first notification stored at or after
	// it; otherwise only new notifications are delivered.
	Time time.Time
	// All starts at the first notification held by the stream.
	All bool
}

// Subscription reads the notifications of one model in stream order.
type Subscription struct {
	it jetstream.MessagesContext
}

// Subscribe starts reading the notifications of model m from start on. It
// uses an ordered consumer: no state on the server, gaps are repaired by the
// client library. Subscribing before publishing a request (Start{} = only
// new notifications) guarantees that its notification is seen.
func Subscribe(ctx context.Context, js jetstream.JetStream, m string, start Start) (*Subscription, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{queue.NotifySubject(m)}, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case start.All:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case !start.Time.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := start.Time
		cfg.OptStartTime = &t
	}
	c, err := js.OrderedConsumer(ctx, queue.NotifyStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("notify: subscribe %s: %w", m, err)
	}
	it, err := c.Messages()
	if err != nil {
		return nil, fmt.Errorf("notify: subscribe %s: %w", m, err)
	}
	return &Subscription{it: it}, nil
}

// Next returns the next notification. It returns ctx's error when ctx ends
// first; the subscription is stopped then and cannot be used again.
func (s *Subscription) Next(ctx context.Context) (model.Notification, error) {
	stop := context.AfterFunc(ctx, s.it.Stop)
	defer stop()
	for {
		msg, err := s.it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return model.Notification{}, ctx.Err()
			}
			return model.Notification{}, fmt.Errorf("notify: next: %w", err)
		}
		if n, err := Decode(msg.Data()); err == nil {
			return n, nil
		}
	}
}

// Stop ends the subscription.
func (s *Subscription) Stop() { s.it.Stop() }

// Wait returns the first final notification of request id. It returns
// ctx's error on timeout.
func (s *Subscription) Wait(ctx context.Context, id string) (model.Notification, error) {
	for {
		n, err := s.Next(ctx)
		if err != nil {
			return n, err
		}
		if n.RequestID == id && n.Status.Final() {
			return n, nil
		}
	}
}
