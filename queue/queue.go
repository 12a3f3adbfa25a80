package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/model"
)

// Names of the JetStream assets teatree owns.
const (
	RequestStream  = "TEATREE_REQUESTS"
	NotifyStream   = "TEATREE_NOTIFY"
	WritersBucket  = "teatree-writers"
	requestPrefix  = "teatree.req."
	notifyPrefix   = "teatree.notify."
	DispatcherName = "dispatcher" // durable consumer of the dispatcher
)

// RequestSubject is the subject requests for model m are published on.
func RequestSubject(m string) string { return requestPrefix + m }

// NotifySubject is the subject notifications for model m are published on.
func NotifySubject(m string) string { return notifyPrefix + m }

// ConsumerName is the durable consumer the db-manager of model m binds.
func ConsumerName(m string) string { return "dbm-" + m }

// ModelOf returns the model token of a request or notify subject, or "" if
// the subject is not one of teatree's.
func ModelOf(subject string) string {
	for _, p := range []string{requestPrefix, notifyPrefix} {
		if len(subject) > len(p) && subject[:len(p)] == p {
			return subject[len(p):]
		}
	}
	return ""
}

// Config sets the stream limits. Zero fields take the defaults.
type Config struct {
	MaxAge       time.Duration // request log retention; default DefaultMaxAge, 7 days
	Duplicates   time.Duration // dedupe window of both streams; default DefaultDuplicates, 10 minutes
	NotifyMaxAge time.Duration // notification retention; default DefaultNotifyMaxAge, 7 days
	LeaseTTL     time.Duration // writer lease TTL (KV bucket max age); default DefaultLeaseTTL, 15 s
	Replicas     int           // 1 for a single server, 3 for a cluster; default DefaultReplicas, 1
}

// The defaults of Config, one per field; see each field.
const (
	DefaultMaxAge       = 7 * 24 * time.Hour
	DefaultDuplicates   = 10 * time.Minute
	DefaultNotifyMaxAge = 7 * 24 * time.Hour
	DefaultLeaseTTL     = 15 * time.Second
	DefaultReplicas     = 1
)

// WithDefaults returns a copy of c whose zero fields hold their defaults.
func (c Config) WithDefaults() Config {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.NotifyMaxAge == 0 {
		c.NotifyMaxAge = DefaultNotifyMaxAge
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	return c
}

// Connect connects to NATS at url with a client name and infinite
// reconnects, and returns the connection and its JetStream context.
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts = append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("queue: connect to NATS at %s: %w (is the server running? set --nats-url or TEATREE_NATS_URL)", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	return nc, js, nil
}

// EnsureStreams creates or updates the request and notification streams,
// the writer lease bucket and the cancels bucket (CancelsBucket). It is idempotent and safe to run from every
// process at start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.WithDefaults()
	streams := []jetstream.StreamConfig{{
		Name:        RequestStream,
		Description: "teatree request log: one message per request, subject teatree.req.<model>",
		Subjects:    []string{requestPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.MaxAge,
		Duplicates:  cfg.Duplicates,
		MaxMsgSize:  model.MaxRequestBytes + 64<<10, // room for headers; the dispatcher rejects what DecodeRequest refuses
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        NotifyStream,
		Description: "teatree notifications: applied / failed / rejected / cancelled, subject teatree.notify.<model>",
		Subjects:    []string{notifyPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.NotifyMaxAge,
		Duplicates:  cfg.Duplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		// A version's notifications are one atomic batch (package notify,
		// ADR-50); the update turns it on for existing streams.
		AllowAtomicPublish: true,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("queue: ensure stream %s: %w", sc.Name, err)
		}
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      WritersBucket,
		Description: "teatree writer leases: key = model, revision at acquisition = fencing epoch",
		TTL:         cfg.LeaseTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("queue: ensure KV bucket %s: %w", WritersBucket, err)
	}
	return ensureCancels(ctx, js, cfg)
}

// Publish publishes r on teatree.req.<model> with Nats-Msg-Id set to the
// request id, plus the extra headers h (e.g. traceparent), and waits for
// the PubAck. A PubAck with Duplicate set means JetStream already holds
// this request id (a retry inside the dedupe window): Publish then reads
// the message it holds (the PubAck names its sequence) and returns an
// error wrapping model.ErrConflict, with the PubAck, when that message is
// a different request (another model, function or args; see
// Request.Digest). A duplicate whose original cannot be read (deleted, or
// no permission to read the stream) is returned as a duplicate.
func Publish(ctx context.Context, js jetstream.JetStream, r model.Request, h nats.Header) (*jetstream.PubAck, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("queue: encode request %s: %w", r.ID, err)
	}
	if len(data) > model.MaxRequestBytes {
		return nil, fmt.Errorf("%w: request is %d bytes: at most %d are allowed; stage large data with 'teactl append' instead", model.ErrInvalid, len(data), model.MaxRequestBytes)
	}
	msg := &nats.Msg{Subject: RequestSubject(r.Model), Data: data, Header: nats.Header{}}
	for k, v := range h {
		msg.Header[k] = v
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID), jetstream.WithExpectStream(RequestStream))
	if err != nil {
		return nil, fmt.Errorf("queue: publish request %s: %w", r.ID, err)
	}
	if ack.Duplicate {
		return ack, sameRequest(ctx, js, ack.Sequence, r)
	}
	return ack, nil
}

// sameRequest returns an error wrapping model.ErrConflict when the request
// stored at seq is not r under another publication.
func sameRequest(ctx context.Context, js jetstream.JetStream, seq uint64, r model.Request) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, RequestStream)
	if err != nil {
		return nil // cannot tell: a duplicate, as JetStream says
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil {
		return nil
	}
	return taken(r, raw.Subject, raw.Sequence, raw.Data)
}

// taken returns an error wrapping model.ErrConflict when r reuses the id
// of the request stored at stream sequence seq on subject with body data
// but asks for something else (another model, function or args); nil when
// data is r again (a retry).
func taken(r model.Request, subject string, seq uint64, data []byte) error {
	orig, err := model.DecodeRequest(data)
	if err != nil {
		orig = model.Request{Model: ModelOf(subject), Function: "(undecodable)"}
	}
	if orig.Model == "" {
		orig.Model = ModelOf(subject)
	}
	if err == nil && orig.Model == r.Model && orig.Digest() == r.Digest() {
		return nil
	}
	return IDTaken(r.ID, orig.Model, orig.Function, seq)
}

// IDTaken is the error for a request that reuses the id of the request at
// stream sequence seq, of model m and function f.
func IDTaken(id, m, f string, seq uint64) error {
	return fmt.Errorf("%w: request id %s is already used by model %s function %s (stream sequence %d): a retry must repeat the same model, function and args; give a new request a new id", model.ErrConflict, id, m, f, seq)
}

// LastSeq returns the sequence of the newest message on subject in stream,
// or 0 if there is none.
func LastSeq(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("queue: stream %s: %w", stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("queue: last message on %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// StreamLastSeq returns the last sequence of the request stream (0 when
// empty); a model created now owns the requests after it.
func StreamLastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, RequestStream)
	if err != nil {
		return 0, fmt.Errorf("queue: stream %s: %w", RequestStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue: stream %s info: %w", RequestStream, err)
	}
	return info.State.LastSeq, nil
}

// BindModelConsumer (re)creates the durable pull consumer dbm-<model> so that
// it delivers the model's requests from stream sequence startSeq on. An
// existing consumer is deleted first: the caller holds the writer lease, and
// the model's DuckDB file, not the consumer's ack floor, records what was
// applied. Acks are AckAll: acking the last message of a committed batch
// acknowledges the whole batch.
func BindModelConsumer(ctx context.Context, js jetstream.JetStream, m string, startSeq uint64, ackWait time.Duration) (jetstream.Consumer, error) {
	name := ConsumerName(m)
	if err := js.DeleteConsumer(ctx, RequestStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("queue: delete consumer %s: %w", name, err)
	}
	if startSeq == 0 {
		startSeq = 1
	}
	c, err := js.CreateConsumer(ctx, RequestStream, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "teatree db-manager of model " + m,
		FilterSubject: RequestSubject(m),
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   startSeq,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: 100000,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: create consumer %s: %w", name, err)
	}
	return c, nil
}

// RequestID returns the id to record a request under when its body could
// not be decoded: the Nats-Msg-Id header if it is a valid request id, else
// "seq-<stream sequence>". Dispatcher and db-manager use it alike.
func RequestID(h nats.Header, seq uint64) string {
	if id := h.Get(jetstream.MsgIDHeader); model.ValidateRequestID(id) == nil {
		return id
	}
	return fmt.Sprintf("seq-%d", seq)
}
