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
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// PublishAll publishes ns asynchronously and waits for every PubAck: one
// round trip per window of outstanding publishes instead of one per
// notification.
func (p *Publisher) PublishAll(ctx context.Context, ns []model.Notification) error {
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
