package dbmanager

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/telemetry"
)

// item is one message of a batch and what became of it.
type item struct {
	msg     jetstream.Msg
	seq     uint64
	queued  time.Time
	req     model.Request
	call    functions.Call // the request, decoded and checked once
	payload string         // staged payload URI, if any
	digest  string         // req.Digest() of a decodable request
	status  model.Status
	err     error
	skip    bool // redelivered or duplicate: acknowledge only
	refused bool // its id is another request's: rejected, recorded in _teatree.refused
	result  functions.Result
	reads   map[string]model.ModelVersion // args.reads as the dispatcher pinned them (reads.go)
	span    trace.Span
}

// errDeliveryGap reports a lost delivery: the consumer sequence of a
// message does not follow the previous one.
var errDeliveryGap = errors.New("consumer sequence gap")

// applyLoop binds the model's consumer at the position and applies
// batches until ctx ends. A lost delivery rebinds it at the position.
//
// Why: a pull request outstanding when the NATS connection breaks (a
// server restart, say) may have messages delivered to it that never reach
// this process. They stay pending until AckWait, but the AckAll of a later
// batch would acknowledge them unseen: an acknowledged request lost. The
// consumer sequence of the deliveries is contiguous otherwise, so a gap
// means a loss; the batch is cut before it and the consumer recreated at
// the first unapplied stream sequence. Found by the chaos harness.
func (m *Manager) applyLoop(ctx context.Context) error {
	for {
		from := max(m.position.Load()+1, m.model.StartSeq)
		cons, err := queue.BindModelConsumer(ctx, m.js, m.cfg.Model, from, m.cfg.AckWait)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dbmanager: %w", err)
		}
		m.log.Info("consuming", "from_seq", from)
		m.ready.Store(true)
		err = m.consume(ctx, cons)
		m.ready.Store(false)
		if !errors.Is(err, errDeliveryGap) {
			return err
		}
		m.log.Warn("a delivery was lost; consuming again from the position", "err", err, "position", m.position.Load())
	}
}

// consume applies batches from cons until ctx ends or a delivery is lost.
func (m *Manager) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * m.cfg.BatchSize))
	if err != nil {
		return fmt.Errorf("dbmanager: consume: %w", err)
	}
	defer it.Stop()
	var delivered uint64 // consumer sequence of the last message taken
	contiguous := func(msg jetstream.Msg) error {
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("dbmanager: message metadata: %w", err)
		}
		if meta.Sequence.Consumer != delivered+1 {
			return fmt.Errorf("%w: delivery %d after %d (stream sequence %d)", errDeliveryGap, meta.Sequence.Consumer, delivered, meta.Sequence.Stream)
		}
		delivered = meta.Sequence.Consumer
		return nil
	}
	next := func(opt jetstream.NextOpt) (jetstream.Msg, error) {
		for {
			msg, err := it.Next(opt)
			if err != nil || m.loseDelivery == nil || !m.loseDelivery(msg) {
				return msg, err
			}
		}
	}
	for {
		first, err := next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dbmanager: next request: %w", err)
		}
		if err := contiguous(first); err != nil {
			return err
		}
		msgs := []jetstream.Msg{first}
		// Take what is already buffered, without waiting for more: the
		// batch grows with the load (group commit). A gap ends the batch
		// before it; the batch is applied and acknowledged first.
		var gap error
		for len(msgs) < m.cfg.BatchSize {
			msg, err := next(jetstream.NextMaxWait(time.Millisecond))
			if err != nil {
				break
			}
			if gap = contiguous(msg); gap != nil {
				break
			}
			msgs = append(msgs, msg)
		}
		if err := m.applyWithRetry(ctx, msgs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if m.crashAfterCommit != nil && m.crashAfterCommit() {
			return fmt.Errorf("dbmanager: %w: simulated crash after commit", ErrFatal)
		}
		// AckAll: the last message acknowledges the batch. A lost ack
		// only causes a redelivery, which the position skips.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil && ctx.Err() == nil {
			m.log.Warn("ack batch", "err", err, "seq", m.position.Load())
		}
		cancel()
		select {
		case m.committed <- struct{}{}:
		default:
		}
		if gap != nil {
			return gap
		}
	}
}

// applyWithRetry applies msgs, retrying with backoff while the verdict
// is retry (retryBackoff). Any other error ends the applier and the
// process: a fatal one wrapped in ErrFatal; one that would fail a request
// but came from the batch's own bookkeeping is returned as it is.
func (m *Manager) applyWithRetry(ctx context.Context, msgs []jetstream.Msg) error {
	err := m.retryBackoff(ctx, "batch not applied, retrying", func(v verdict) bool { return v == retry }, func() error {
		return m.applyBatch(ctx, msgs)
	})
	if judge(ctx, err) == fatal {
		return fatalError("apply", err)
	}
	return err
}

// applyBatch applies msgs exactly once each (see the package doc).
func (m *Manager) applyBatch(ctx context.Context, msgs []jetstream.Msg) error {
	start := time.Now()
	// A cut checkpoints, compacts and captures the file between batches.
	m.liveMu.Lock()
	defer m.liveMu.Unlock()
	items, err := m.prepare(ctx, msgs)
	if err != nil {
		return err
	}
	m.fetchTook = 0
	defer func() {
		for _, it := range items {
			if it.span != nil {
				it.span.End()
			}
		}
		os.RemoveAll(m.cfg.stagingDir())
		os.MkdirAll(m.cfg.stagingDir(), 0o755)
	}()
	if err := m.applyItems(ctx, items); err != nil {
		return err
	}
	counts := map[model.Status]int64{}
	for _, it := range items {
		if !it.skip {
			counts[it.status]++
		}
	}
	for st, n := range counts {
		m.meter.requests.Add(ctx, n, metric.WithAttributes(attribute.String("status", string(st))))
	}
	m.meter.applyTime.Record(ctx, time.Since(start).Seconds())
	m.meter.batchSize.Record(ctx, int64(len(items)))
	m.log.Debug("batch committed", "requests", len(items), "position", m.position.Load(), "took", time.Since(start), "payload_fetch", m.fetchTook)
	return nil
}

// applyItems applies the prepared items of a batch: in one transaction
// when none fails, else split after each failing request (the package
// doc's batch rule). The replay of teactl model verify (verify.go) applies
// a version's requests through it too.
func (m *Manager) applyItems(ctx context.Context, items []*item) error {
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return transientError{fmt.Errorf("dbmanager: connection: %w", err)}
	}
	defer conn.Close()
	// [lo, hi) is the part of the batch the next transaction commits; a
	// request with reads has a transaction of its own (rangeEnd).
	for lo := 0; lo < len(items); {
		hi := rangeEnd(items, lo)
		for {
			failedAt, err := m.applyRange(ctx, conn, items[lo:hi], false)
			if err != nil {
				return err
			}
			if failedAt < 0 {
				break
			}
			// Commit everything before the failure together with it.
			hi = lo + failedAt + 1
		}
		lo = hi
	}
	return nil
}

// prepare decodes and validates msgs and marks those to skip: a request
// whose id was seen before is a retry when it asks for the same thing
// (model, function and args digest) and is skipped; otherwise it is
// another request reusing the id, and is refused (rejected, "request id …
// is already used by …"). Ids are looked up in this model's bookkeeping,
// then in Postgres' request log for the ids other models used (and those
// applied before a restore from a snapshot, which does not carry the
// bookkeeping).
func (m *Manager) prepare(ctx context.Context, msgs []jetstream.Msg) ([]*item, error) {
	items := make([]*item, 0, len(msgs))
	pos := m.position.Load()
	seen := map[string]bool{}
	var ids []string
	for _, msg := range msgs {
		it := &item{msg: msg}
		items = append(items, it)
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("dbmanager: message metadata: %w", err)
		}
		it.seq, it.queued = meta.Sequence.Stream, meta.Timestamp
		if it.seq <= pos {
			it.skip = true // redelivered: applied and committed already
			continue
		}
		req, err := model.DecodeRequest(msg.Data())
		if err == nil && req.Model != m.cfg.Model {
			err = fmt.Errorf("%w: request names model %q but was published for model %q", model.ErrInvalid, req.Model, m.cfg.Model)
		}
		if err == nil {
			it.call, err = functions.Prepare(req, m.model.AllowSQL)
		}
		it.req = req
		if req.ID == "" {
			it.req.ID = queue.RequestID(msg.Headers(), it.seq) // undecodable
		}
		if err == nil {
			it.digest = req.Digest()
		}
		if !seen[it.req.ID] {
			seen[it.req.ID] = true
			ids = append(ids, it.req.ID)
		}
		if err != nil {
			// The dispatcher rejected it with the same code and notified.
			it.status, it.err = model.StatusRejected, err
			continue
		}
		it.payload = functions.PayloadURI(req.Args)
		sctx := telemetry.Extract(ctx, msg.Headers())
		_, it.span = m.tracer.Start(sctx, "apply "+req.Function, trace.WithAttributes(
			attribute.String("teatree.model", m.cfg.Model), attribute.String("teatree.request_id", req.ID), attribute.Int64("teatree.seq", int64(it.seq))))
	}
	if len(ids) == 0 {
		return items, nil
	}
	// The request that owns an id: recorded in this model's bookkeeping,
	// in Postgres' request log (another model, or before the snapshot
	// this file was restored from), or earlier in this batch.
	type owner struct {
		model, function string
		seq             uint64
		digest          sql.NullString // unknown for Postgres' records and old rows
	}
	owners := map[string]owner{}
	// One LIST parameter: binding a placeholder per id cost more than the
	// lookup itself (docs/performance.md, issue 12, 1a).
	rows, err := m.db.QueryContext(ctx, `SELECT request_id, seq, function, digest FROM _teatree.applied
		WHERE request_id IN (SELECT unnest(?::VARCHAR[]))`, ids)
	if err != nil {
		return nil, transientError{fmt.Errorf("dbmanager: look up applied ids: %w", err)}
	}
	for rows.Next() {
		var id string
		o := owner{model: m.cfg.Model}
		if err := rows.Scan(&id, &o.seq, &o.function, &o.digest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("dbmanager: look up applied ids: %w", err)
		}
		owners[id] = o
	}
	rows.Close()
	var others []string
	for _, id := range ids {
		if _, ok := owners[id]; !ok {
			others = append(others, id)
		}
	}
	recs, err := m.ctl.GetRequests(ctx, others)
	if err != nil {
		return nil, transientError{fmt.Errorf("dbmanager: look up request ids: %w", err)}
	}
	for _, it := range items {
		if it.skip {
			continue
		}
		if it.status != model.StatusRejected {
			rec, found := recs[it.req.ID]
			if err := pinReads(it, rec, found); err != nil {
				return nil, err
			}
		}
		o, ok := owners[it.req.ID]
		if r, found := recs[it.req.ID]; !ok && found && (r.Model != m.cfg.Model || r.StreamSeq != it.seq) {
			o, ok = owner{model: r.Model, function: r.Function, seq: r.StreamSeq}, true
		}
		switch {
		case !ok:
			owners[it.req.ID] = owner{model: m.cfg.Model, function: it.req.Function, seq: it.seq, digest: sql.NullString{String: it.digest, Valid: true}}
		case it.status == model.StatusRejected:
			it.skip = true
		case o.model == m.cfg.Model && (o.digest.Valid && o.digest.String == it.digest || !o.digest.Valid && o.function == it.req.Function):
			it.skip = true // a retry
		default:
			m.refuse(it, o.model, o.function, o.seq)
		}
	}
	if err := m.markCancelled(ctx, items); err != nil {
		return nil, err
	}
	return items, nil
}

// refuse marks it as another request under the id of the request of model
// mdl and function f at stream sequence seq: it is rejected, and announced
// by the db-manager (the dispatcher cannot tell).
func (m *Manager) refuse(it *item, mdl, f string, seq uint64) {
	it.refused, it.status, it.err = true, model.StatusRejected, queue.IDTaken(it.req.ID, mdl, f, seq)
	m.log.Info("request refused: its id is taken", "request_id", it.req.ID, "seq", it.seq, "taken_by_model", mdl, "taken_by_seq", seq)
}

// applyRange applies items in one transaction. When a request fails it
// rolls back, marks the request failed and returns its index; the caller
// then applies the range up to and including it again. Otherwise it
// brings the derived tables up to date (derived.go), records the range,
// advances the position, commits and returns -1. The inline rows of
// appends are gathered and inserted together (functions.RowBuffer) before
// the next other request and at the end. stepwise is the way to find
// which request a batch-wide step fails for: each request inserts its own
// rows, and the derived tables are refreshed after each request instead
// of once (derived.go).
func (m *Manager) applyRange(ctx context.Context, conn *sql.Conn, items []*item, stepwise bool) (int, error) {
	if !stepwise { // a stepwise call is inside the first one, attached already
		detach, err := m.attachReads(ctx, conn, items)
		if err != nil {
			return 0, err
		}
		defer detach()
	}
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return 0, fmt.Errorf("dbmanager: begin: %w", err)
	}
	rollback := func() {
		m.tables.Forget() // it may hold what the transaction changed
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			m.log.Warn("rollback", "err", err)
		}
	}
	env := functions.Env{Conn: conn, AllowSQL: m.model.AllowSQL, Tables: m.tables, Sources: m.cfg.Sources}
	if !stepwise {
		env.Rows = &functions.RowBuffer{}
	}
	m.wasmEnv(&env)
	// flush inserts the rows the appends so far deferred (env.Rows). A
	// failure cannot be told apart by request: the batch is applied again
	// stepwise, where every request inserts its own rows. done says
	// applyRange returns (n, err).
	flush := func() (done bool, n int, err error) {
		if env.Rows == nil {
			return false, 0, nil
		}
		if err := env.Rows.Flush(ctx, conn); err != nil {
			rollback()
			if judge(ctx, err) != failed {
				return true, 0, fmt.Errorf("dbmanager: %w", err)
			}
			m.log.Info("appended rows of the batch refused, applying the batch again request by request", "err", err)
			n, err := m.applyRange(ctx, conn, items, true)
			return true, n, err
		}
		return false, 0, nil
	}
	der, err := m.beginDerived(ctx, conn)
	if err != nil {
		rollback()
		return 0, err
	}
	for i, it := range items {
		if it.skip || it.status == model.StatusRejected || it.status == model.StatusFailed || it.status == model.StatusCancelled {
			continue
		}
		if !functions.DefersRows(it.call) {
			if done, n, err := flush(); done {
				return n, err
			}
		}
		env.Payload = func(ctx context.Context, uri string) (string, error) {
			t0 := time.Now()
			defer func() { m.fetchTook += time.Since(t0) }()
			return m.fetchPayload(ctx, it.req.ID, uri)
		}
		res, err := it.call.Apply(ctx, env)
		if err == nil {
			err = der.afterRequest(ctx, conn, it.req.Function, res, stepwise)
		}
		if err != nil {
			rollback()
			// Only the request's own fault fails it; on retry or fatal
			// the whole batch is judged again by applyWithRetry.
			if judge(ctx, err) != failed {
				return 0, fmt.Errorf("dbmanager: request %s (seq %d, %s): %w", it.req.ID, it.seq, it.req.Function, err)
			}
			it.status, it.err = model.StatusFailed, err
			if it.span != nil {
				it.span.RecordError(err)
			}
			m.logFailure(it)
			return i, nil
		}
		it.status, it.result = model.StatusApplied, res
	}
	if done, n, err := flush(); done {
		return n, err
	}
	if !stepwise {
		if err := der.afterBatch(ctx, conn, items); err != nil {
			rollback()
			if judge(ctx, err) != failed {
				return 0, fmt.Errorf("dbmanager: %w", err)
			}
			// Which request made it fail: apply again, refreshing after
			// each request.
			m.log.Info("derived tables: refresh failed, applying the batch again request by request", "err", err)
			return m.applyRange(ctx, conn, items, true)
		}
	}
	if err := m.record(ctx, conn, items, der.refreshed); err != nil {
		rollback()
		return 0, err
	}
	if len(der.refreshed) > 0 { // a rebuild may re-create a derived table
		m.tables.Forget()
	}
	// Never commit after the lease is lost: another writer may own the
	// model now.
	if ctx.Err() != nil {
		rollback()
		return 0, ctx.Err()
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		rollback()
		return 0, fmt.Errorf("dbmanager: commit: %w", err)
	}
	// The failures and cancels are recorded: their payloads go before the publisher
	// can announce them (docs/decisions.md, staged payloads).
	for _, it := range items {
		if !it.skip && (it.status == model.StatusFailed || it.status == model.StatusCancelled) && it.payload != "" {
			m.deleteStaged(ctx, it.req.ID)
		}
	}
	for _, it := range items {
		if it.seq > m.position.Load() {
			m.position.Store(it.seq)
		}
	}
	return -1, nil
}

// record writes the bookkeeping of items inside the open transaction.
func (m *Manager) record(ctx context.Context, conn *sql.Conn, items []*item, derived []functions.Result) error {
	now := time.Now().UTC()
	var last uint64
	changed, modified, replaced := map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	var rows [][]driver.Value // appliedColumns
	for _, it := range items {
		last = max(last, it.seq)
		if it.skip {
			continue
		}
		var errText any
		if it.err != nil {
			errText = it.err.Error()
		}
		if it.refused {
			// _teatree.applied is keyed by request id, which is the
			// first request's.
			if _, err := conn.ExecContext(ctx, `INSERT OR IGNORE INTO _teatree.refused VALUES (?, ?, ?, ?, ?, ?)`,
				it.seq, it.req.ID, it.req.Function, errText, it.queued.UTC(), now); err != nil {
				return fmt.Errorf("dbmanager: record refused request %s: %w", it.req.ID, err)
			}
			continue
		}
		rows = append(rows, []driver.Value{it.req.ID, it.seq, it.req.Function, string(it.status), errText, nullIfEmpty(it.payload), it.queued.UTC(), now, nullIfEmpty(it.digest), modulesOf(it), readsOf(it)})
		if it.status != model.StatusApplied {
			continue
		}
		for _, t := range it.result.Tables {
			changed[t] = it.seq
			if !it.result.Appended {
				modified[t] = it.seq
			}
			if it.result.Replaced {
				replaced[t] = it.seq
			}
		}
		if it.result.AllTables {
			changed["*"], modified["*"] = it.seq, it.seq
		}
	}
	for _, r := range derived { // refreshed after the batch (derived.go)
		for _, t := range r.Tables {
			changed[t], modified[t] = last, last
			if r.Replaced {
				replaced[t] = last
			}
		}
	}
	// DuckDB's appender: a statement per request cost more than applying
	// a one-row append, and a multi-row INSERT binds every value (the ids
	// are new: prepare skipped or refused every id already recorded).
	if len(rows) > 0 {
		if err := duck.Append(conn, "_teatree", "applied", rows); err != nil {
			return fmt.Errorf("dbmanager: record %d requests from %s: %w", len(rows), rows[0][0], err)
		}
	}
	for t, seq := range changed {
		// modified and replaced stay at the last sequence that did more
		// than append, and that created or dropped the table.
		if _, err := conn.ExecContext(ctx, `INSERT INTO _teatree.table_change (table_name, seq, modified, replaced) VALUES (?, ?, ?, ?)
			ON CONFLICT (table_name) DO UPDATE SET seq = excluded.seq,
				modified = CASE WHEN excluded.modified > 0 THEN excluded.modified ELSE modified END,
				replaced = CASE WHEN excluded.replaced > 0 THEN excluded.replaced ELSE replaced END`, t, seq, modified[t], replaced[t]); err != nil {
			return fmt.Errorf("dbmanager: record change of %s: %w", t, err)
		}
	}
	if _, err := conn.ExecContext(ctx, `UPDATE _teatree.position SET last_seq = ?`, last); err != nil {
		return fmt.Errorf("dbmanager: advance position: %w", err)
	}
	return nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// fetchPayload downloads a staged payload for request id into the staging
// directory DuckDB may read. The payload must be staged for that request
// of this model (model.CheckStagedKey). A missing object fails the
// request; any other object-store error is transient.
func (m *Manager) fetchPayload(ctx context.Context, id, uri string) (string, error) {
	if err := model.CheckStagedKey(m.cfg.Model, id, uri); err != nil {
		return "", err
	}
	path := m.stagedPath(id, uri)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", transientError{fmt.Errorf("dbmanager: staging dir: %w", err)}
	}
	if _, err := objstore.GetFile(ctx, m.store, uri, path); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return "", fmt.Errorf("staged payload %s does not exist: stage it again (teactl append does) and resubmit", uri)
		}
		return "", transientError{fmt.Errorf("dbmanager: fetch payload %s: %w", uri, err)}
	}
	return path, nil
}

// logFailure logs a failed request. The notification's error is short
// (for a bad payload one line, without server paths); DuckDB's own message,
// with its details and advice, goes to the log only.
func (m *Manager) logFailure(it *item) {
	args := []any{"request_id", it.req.ID, "function", it.req.Function, "seq", it.seq, "err", it.err}
	var de *duckdb.Error
	if errors.As(it.err, &de) && !strings.Contains(it.err.Error(), de.Error()) {
		args = append(args, "duckdb", de.Error())
	}
	m.log.Info("request failed", args...)
	m.errs.Record(fmt.Errorf("request %s: %w", it.req.ID, it.err))
}

// deleteStaged deletes the staged payloads of request id of this model,
// and only those (objstore.DeleteStaged). Failures are logged: the
// dispatcher's sweep deletes what is left after its grace period.
func (m *Manager) deleteStaged(ctx context.Context, id string) {
	if m.replay {
		return // a replay (verify.go) never changes the stack
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := objstore.DeleteStaged(ctx, m.store, m.cfg.Model, id); err != nil {
		m.log.Warn("delete staged payload", "request_id", id, "err", err)
	}
}
