// Package dispatcher is teatree's supervisor. It reads every request
// (its own durable consumer "dispatcher" on teatree.req.>), validates it
// with the same code the db-manager uses, announces a `rejected`
// notification for an invalid one, records valid ones as queued, and makes
// sure a db-manager runs for every model with pending requests; it stops
// db-managers that stayed idle. It is never on the data path: the
// db-manager reads requests from the stream itself.
//
// It also keeps the staging area clean: a rejected request's staged
// payloads are deleted with the rejection, and a periodic sweep deletes
// staged objects older than Config.StagingGrace that no pending request
// can use (staged, but the request was never submitted).
//
// Where db-managers run is a Runner: child processes (LocalRunner) or, on
// Kubernetes, a StatefulSet per model (package kube).
//
// While Run runs the dispatcher is the NATS micro service
// svcinfo.Dispatcher (metadata role=leader; teactl ping and teactl info):
// its endpoint "info" reports the running db-managers, its consumer's ack
// floor and lag, and the last failed or retried step.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/telemetry"
)

// Runner starts and stops the db-managers of models.
type Runner interface {
	// Ensure makes sure a db-manager for model m runs (or is starting).
	Ensure(ctx context.Context, m string) error
	// Stop stops the db-manager of m gracefully and waits for it.
	Stop(ctx context.Context, m string) error
	// Running lists the models whose db-manager runs. An error means the
	// runner could not find out (e.g. the Kubernetes API did not answer);
	// the caller decides what to do, no stale list is returned instead.
	Running(ctx context.Context) ([]string, error)
}

// Config configures a Dispatcher. Each field's default is an exported
// constant named after it, written next to it; New fills the unset
// (zero or negative) fields with them (Config.WithDefaults).
type Config struct {
	// IdleTimeout stops a db-manager that had nothing to do for this long;
	// default DefaultIdleTimeout, 5m.
	IdleTimeout time.Duration
	// UnknownModelGrace is how long a request for a model that does not
	// exist (yet) is held before it is rejected, covering a request
	// published while its model is being created; default
	// DefaultUnknownModelGrace, 5s.
	UnknownModelGrace time.Duration
	// BatchSize is the most requests handled per Postgres round trip;
	// default DefaultBatchSize, 500.
	BatchSize int
	// StagingGrace is how old a staged payload must be before the sweep
	// deletes it when no pending request uses it (teactl stages a file
	// and submits its request right away; a payload whose request was
	// never submitted is abandoned); default DefaultStagingGrace, 24h.
	StagingGrace time.Duration
	// StagingSweep is how often the staging area is swept; default
	// DefaultStagingSweep, 10m.
	StagingSweep time.Duration
}

// The defaults of Config, one per field; see each field.
const (
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultUnknownModelGrace = 5 * time.Second
	DefaultBatchSize         = 500
	DefaultStagingGrace      = 24 * time.Hour
	DefaultStagingSweep      = 10 * time.Minute
)

// WithDefaults returns a copy of c whose zero or negative fields hold
// their defaults.
func (c Config) WithDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.UnknownModelGrace <= 0 {
		c.UnknownModelGrace = DefaultUnknownModelGrace
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.StagingGrace <= 0 {
		c.StagingGrace = DefaultStagingGrace
	}
	if c.StagingSweep <= 0 {
		c.StagingSweep = DefaultStagingSweep
	}
	return c
}

// Dispatcher supervises db-managers.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	js     jetstream.JetStream
	ctl    *controldb.DB
	store  objstore.Store
	runner Runner
	notify *notify.Publisher
	tracer trace.Tracer

	mu        sync.Mutex
	idleSince map[string]time.Time
	errs      svcinfo.ErrorLog // last failed or retried step (teactl info)
}

// New returns a Dispatcher; cfg's unset fields get their defaults
// (Config.WithDefaults). store is the object store of staged payloads.
func New(cfg Config, log *slog.Logger, js jetstream.JetStream, ctl *controldb.DB, store objstore.Store, runner Runner) *Dispatcher {
	cfg = cfg.WithDefaults()
	return &Dispatcher{cfg: cfg, log: log, js: js, ctl: ctl, store: store, runner: runner, notify: notify.NewPublisher(js),
		tracer: otel.Tracer("github.com/teatree/teatree/dispatcher"), idleSince: map[string]time.Time{}}
}

// Run dispatches until ctx ends, then returns nil. Its loops (consuming
// requests, stopping idle db-managers, sweeping the staging area) run
// under one errgroup: the first that fails ends the others, and Run
// returns that error, e.g. when the dispatcher's consumer or the request
// stream is deleted, so a supervisor (or the leader election) can act on
// it instead of a dispatcher that holds its place and dispatches nothing.
// It does not stop the runner's db-managers; the caller owns the runner.
func (d *Dispatcher) Run(ctx context.Context) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, queue.RequestStream, jetstream.ConsumerConfig{
		Durable:       queue.DispatcherName,
		Description:   "teatree dispatcher: validates requests and starts db-managers",
		FilterSubject: queue.RequestSubject(">"),
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 100000,
	})
	if err != nil {
		return fmt.Errorf("dispatcher: consumer: %w", err)
	}
	svc, err := d.addService()
	if err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	defer svc.Stop()
	if err := d.ensurePending(ctx); err != nil {
		d.warn("checking models with pending requests", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.consume(ctx, cons) })
	g.Go(func() error { return d.idleLoop(ctx) })
	g.Go(func() error { return d.sweepLoop(ctx, cons) })
	return g.Wait()
}

// warn logs err as msg and keeps it as the last error (teactl info).
func (d *Dispatcher) warn(msg string, err error, args ...any) {
	d.log.Warn(msg, append(args, "err", err)...)
	d.errs.Record(fmt.Errorf("%s: %w", msg, err))
}

func (d *Dispatcher) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * d.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("dispatcher: consume: %w", err)
	}
	defer it.Stop()
	for {
		first, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dispatcher: next request: %w", err)
		}
		msgs := []jetstream.Msg{first}
		for len(msgs) < d.cfg.BatchSize {
			msg, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
			if err != nil {
				break
			}
			msgs = append(msgs, msg)
		}
		for {
			err := d.handle(ctx, msgs)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			d.warn("requests not dispatched, retrying", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if err := msgs[len(msgs)-1].Ack(); err != nil {
			d.warn("ack", err)
		}
	}
}

// handle validates msgs, records and announces the verdicts and ensures
// db-managers. It is idempotent: a redelivered batch is handled again with
// the same result (notifications are deduplicated by JetStream, request_log
// rows are upserts).
func (d *Dispatcher) handle(ctx context.Context, msgs []jetstream.Msg) error {
	models := map[string]*controldb.Model{}
	var records []controldb.RequestRecord
	var rejected []model.Notification
	var unstage []stagedFor    // rejected requests whose staged payloads go
	valid := map[string]bool{} // ids of the valid requests of msgs
	wanted := map[string]bool{}
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("dispatcher: metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		subjModel := queue.ModelOf(msg.Subject())
		mctx := telemetry.Extract(ctx, msg.Headers())
		_, span := d.tracer.Start(mctx, "validate", trace.WithAttributes(attribute.String("teatree.model", subjModel), attribute.Int64("teatree.seq", int64(seq))))
		req, verr := model.DecodeRequest(msg.Data())
		if req.ID == "" {
			req.ID = queue.RequestID(msg.Headers(), seq)
		}
		if req.Model == "" {
			req.Model = subjModel
		}
		if verr == nil && req.Model != subjModel {
			verr = fmt.Errorf("%w: request names model %q but was published on %s", model.ErrInvalid, req.Model, msg.Subject())
		}
		var mdl *controldb.Model
		if verr == nil {
			mdl, verr = d.lookup(ctx, models, subjModel, seq, meta.Timestamp)
			if verr != nil && !errors.Is(verr, model.ErrInvalid) {
				span.End()
				return verr
			}
		}
		if verr == nil {
			verr = functions.ValidateRequest(req, mdl.AllowSQL)
		}
		var pins map[string]model.ModelVersion
		if verr == nil {
			pins, verr = d.pinReads(ctx, req)
			if verr != nil && !errors.Is(verr, model.ErrInvalid) {
				span.End()
				return verr
			}
			if verr != nil {
				verr = fmt.Errorf("request %s: %s: %w", req.ID, req.Function, verr)
			}
		}
		span.End()
		rec := controldb.RequestRecord{RequestID: req.ID, Model: req.Model, Function: req.Function, Status: model.StatusQueued, StreamSeq: seq, Submitted: meta.Timestamp, Reads: pins}
		if verr != nil {
			rec.Status, rec.Error, rec.Finished = model.StatusRejected, verr.Error(), time.Now()
			rejected = append(rejected, model.Notification{RequestID: req.ID, Model: subjModel, Function: req.Function,
				Status: model.StatusRejected, Error: verr.Error(), Seq: seq, Queued: meta.Timestamp})
			d.log.Info("request rejected", "model", subjModel, "request_id", req.ID, "err", verr)
			// The subject, not the body, names the model the client may
			// write: only that model's staging prefix is touched. Only a
			// request that references a payload can have staged one (the
			// sweep gets the rest).
			if functions.PayloadURI(req.Args) != "" && model.ValidateID(subjModel) == nil && model.ValidateRequestID(req.ID) == nil {
				unstage = append(unstage, stagedFor{model: subjModel, id: req.ID})
			}
		} else {
			wanted[subjModel] = true
			valid[req.ID] = true
		}
		if model.ValidateID(rec.Model) == nil {
			records = append(records, rec)
		}
	}
	unstage, err := d.unstageable(ctx, unstage, valid)
	if err != nil {
		return err
	}
	if err := d.ctl.RecordRequests(ctx, records); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	// Deleted before the rejection is announced: a client that sees it
	// knows the payload is gone.
	for _, r := range unstage {
		if _, err := objstore.DeleteStaged(ctx, d.store, r.model, r.id); err != nil {
			d.warn("delete staged payload of a rejected request", err, "model", r.model, "request_id", r.id)
		}
	}
	if err := d.notify.PublishAll(ctx, rejected); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	for m := range wanted {
		d.mu.Lock()
		delete(d.idleSince, m)
		d.mu.Unlock()
		if err := d.runner.Ensure(ctx, m); err != nil {
			return fmt.Errorf("dispatcher: start db-manager of %s: %w", m, err)
		}
	}
	return nil
}

// lookup returns the model a request at stream sequence seq belongs to.
// It returns an error wrapping model.ErrInvalid when the model does not
// exist or was created after the request was published.
func (d *Dispatcher) lookup(ctx context.Context, cache map[string]*controldb.Model, id string, seq uint64, stored time.Time) (*controldb.Model, error) {
	if m, ok := cache[id]; ok {
		return m, d.owns(m, seq)
	}
	for {
		m, err := d.ctl.GetModel(ctx, id)
		if err == nil {
			cache[id] = &m
			return &m, d.owns(&m, seq)
		}
		if !errors.Is(err, model.ErrNotFound) {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		if time.Since(stored) >= d.cfg.UnknownModelGrace {
			return nil, fmt.Errorf("%w: model %q does not exist: create it with 'teactl model create %s'", model.ErrInvalid, id, id)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *Dispatcher) owns(m *controldb.Model, seq uint64) error {
	if seq < m.StartSeq {
		return fmt.Errorf("%w: model %q did not exist when this request was published (stream sequence %d, model created at %d)", model.ErrInvalid, m.ID, seq, m.StartSeq)
	}
	return nil
}

// pending reports whether model m has requests that are not yet
// published: in a version, or (failed and rejected requests, which cut no
// version) in the request log up to the model's settled sequence.
func (d *Dispatcher) pending(ctx context.Context, m controldb.Model) (bool, error) {
	last, err := queue.LastSeq(ctx, d.js, queue.RequestStream, queue.RequestSubject(m.ID))
	if err != nil {
		return false, err
	}
	if last < m.StartSeq || last <= m.SettledSeq {
		return false, nil
	}
	v, err := d.ctl.GetVersion(ctx, m.ID, 0)
	if errors.Is(err, model.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return last > v.LastSeq, nil
}

// ensurePending starts a db-manager for every model with pending requests:
// after a restart of the dispatcher, or of a whole node.
func (d *Dispatcher) ensurePending(ctx context.Context) error {
	models, err := d.ctl.ListModels(ctx)
	if err != nil {
		return err
	}
	for _, m := range models {
		p, err := d.pending(ctx, m)
		if err != nil {
			return err
		}
		if p {
			if err := d.runner.Ensure(ctx, m.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// idleLoop stops db-managers with nothing pending for IdleTimeout.
func (d *Dispatcher) idleLoop(ctx context.Context) error {
	t := time.NewTicker(max(d.cfg.IdleTimeout/4, 250*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		running, err := d.runner.Running(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Nothing is stopped on a guess; the next tick asks again.
			d.warn("idle check: listing running db-managers", err)
			continue
		}
		for _, id := range running {
			m, err := d.ctl.GetModel(ctx, id)
			if err != nil {
				continue
			}
			p, err := d.pending(ctx, m)
			if err != nil {
				d.warn("idle check", err, "model", id)
				continue
			}
			d.mu.Lock()
			since, seen := d.idleSince[id]
			switch {
			case p:
				delete(d.idleSince, id)
			case !seen:
				d.idleSince[id] = time.Now()
			}
			d.mu.Unlock()
			if !p && seen && time.Since(since) >= d.cfg.IdleTimeout {
				d.log.Info("stopping idle db-manager", "model", id, "idle", time.Since(since).Round(time.Second))
				if err := d.runner.Stop(ctx, id); err != nil {
					d.warn("stop db-manager", err, "model", id)
				}
				d.mu.Lock()
				delete(d.idleSince, id)
				d.mu.Unlock()
			}
		}
	}
}

// stagedFor names the staging prefix of one request,
// model.StagingPrefix(model, id).
type stagedFor struct{ model, id string }

// unstageable returns the rejected requests whose staged payloads may be
// deleted: those whose id no valid request uses, in this batch (valid) or
// in the request log. A request id is the client's; a bad request that
// reuses the id of a good one must not delete the good one's payload.
func (d *Dispatcher) unstageable(ctx context.Context, rejected []stagedFor, valid map[string]bool) ([]stagedFor, error) {
	var out []stagedFor
	for _, r := range rejected {
		if valid[r.id] {
			continue
		}
		rec, err := d.ctl.GetRequest(ctx, r.id)
		switch {
		case errors.Is(err, model.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("dispatcher: %w", err)
		case rec.Status != model.StatusRejected && rec.Model == r.model:
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// sweepLoop sweeps the staging area every StagingSweep until ctx ends.
func (d *Dispatcher) sweepLoop(ctx context.Context, cons jetstream.Consumer) error {
	t := time.NewTicker(d.cfg.StagingSweep)
	defer t.Stop()
	for {
		n, err := d.sweep(ctx, cons)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.warn("staging sweep", err)
		case n > 0:
			d.log.Info("staging sweep: deleted abandoned payloads", "objects", n, "grace", d.cfg.StagingGrace)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep deletes the staged objects older than StagingGrace that no
// pending request can use, and returns how many it deleted. A request is
// pending while the request log records it as queued; a request the
// dispatcher has not read yet is not in the log, so nothing is swept while
// its consumer has undelivered requests. A key that is not
// staging/<model>/<request_id>/<file> can serve no request.
func (d *Dispatcher) sweep(ctx context.Context, cons jetstream.Consumer) (int, error) {
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("dispatcher: sweep: %w", err)
	}
	if info.NumPending > 0 {
		return 0, nil
	}
	objs, err := d.store.List(ctx, model.StagingRoot)
	if err != nil {
		return 0, fmt.Errorf("dispatcher: sweep: %w", err)
	}
	cutoff := time.Now().Add(-d.cfg.StagingGrace)
	aged, recent := map[stagedFor]bool{}, map[stagedFor]bool{}
	n := 0
	for _, o := range objs {
		m, id, ok := model.ParseStagedKey(o.Key)
		old := !o.Modified.IsZero() && o.Modified.Before(cutoff) // no time: not known to be old
		switch {
		case !ok && old:
			if err := d.store.Delete(ctx, o.Key); err != nil {
				return n, fmt.Errorf("dispatcher: sweep: %w", err)
			}
			n++
		case !ok:
		case old:
			aged[stagedFor{m, id}] = true
		default:
			recent[stagedFor{m, id}] = true
		}
	}
	for r := range aged {
		if recent[r] {
			continue // staged again: in use
		}
		rec, err := d.ctl.GetRequest(ctx, r.id)
		switch {
		case errors.Is(err, model.ErrNotFound):
		case err != nil:
			return n, fmt.Errorf("dispatcher: sweep: %w", err)
		case rec.Status == model.StatusQueued:
			continue
		}
		k, err := objstore.DeleteStaged(ctx, d.store, r.model, r.id)
		n += k
		if err != nil {
			return n, fmt.Errorf("dispatcher: sweep: %w", err)
		}
	}
	return n, nil
}
