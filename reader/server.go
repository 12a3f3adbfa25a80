package reader

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
)

// pollEvery is how often the reader asks Postgres for a newer version of
// the models it serves, besides the notifications: a safety net for a
// notification it missed.
const pollEvery = 30 * time.Second

// Server is a reader: it serves queries on the models asked for, each on
// its latest version (or the one a request names), as NATS micro service
// Config.Name with endpoint "query" on teatree.query.* in queue group
// QueueGroup.
type Server struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	ctl   *controldb.DB
	store objstore.Store

	mu     sync.Mutex
	models map[string]*modelState
	seq    atomic.Uint64
	active atomic.Int64 // queries running
	// Bytes of snapshots downloaded and copied from a held version.
	fetched, reused atomic.Int64
	errs            svcinfo.ErrorLog // last failed query (teactl info)

	slots   chan struct{}
	wg      sync.WaitGroup // the goroutines of queries and updates
	closing bool           // Run is returning: no new goroutines (guarded by mu)
}

// New returns a reader over nc (queries and notifications), ctl (version
// lookups) and store (snapshots). cfg must have been validated.
func New(cfg Config, log *slog.Logger, nc *nats.Conn, ctl *controldb.DB, store objstore.Store) *Server {
	return &Server{cfg: cfg, log: log, nc: nc, ctl: ctl, store: store, models: map[string]*modelState{}, slots: make(chan struct{}, cfg.MaxQueries)}
}

// Run serves until ctx ends, then stops the service, ends the queries
// running, closes every version and returns nil. ready, when not nil, is
// called once the service answers.
func (s *Server) Run(ctx context.Context, ready func()) error {
	if !duck.ArrowAvailable {
		return ErrNoArrow
	}
	if err := os.MkdirAll(s.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	// Versions left by an earlier run are stale: only files named as the
	// reader names them go (<model>/<version>-<seq>.reader.duckdb and a
	// fetch's temporaries), nothing else a misdirected --dir may hold.
	for _, pat := range []string{"*/*" + fileSuffix, "*/*" + fileSuffix + ".fetch", "*/.*" + fileSuffix + ".blocks-*"} {
		stale, _ := filepath.Glob(filepath.Join(s.cfg.Dir, pat))
		for _, f := range stale {
			os.Remove(f)
		}
	}
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.closeAll()
	defer s.wg.Wait()
	defer func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		cancel()
	}()

	notes, err := s.nc.Subscribe(queue.NotifySubject("*"), func(msg *nats.Msg) {
		n, err := notify.Decode(msg.Data)
		if err != nil || n.Status != model.StatusApplied {
			return
		}
		s.mu.Lock()
		ms := s.models[n.Model]
		served := ms != nil && ms.latest < n.Version
		s.mu.Unlock()
		if served {
			s.goUpdate(qctx, n.Model)
		}
	})
	if err != nil {
		return fmt.Errorf("reader: subscribe to notifications: %w", err)
	}
	defer notes.Unsubscribe()

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        s.cfg.Name,
		Version:     s.cfg.Version,
		Description: "teatree read-only queries on published versions, Arrow IPC pages",
		QueueGroup:  QueueGroup,
		StatsHandler: func(*micro.Endpoint) any {
			return s.Stats()
		},
	})
	if err != nil {
		return fmt.Errorf("reader: add service: %w", err)
	}
	defer svc.Stop()
	err = svc.AddEndpoint("query", micro.HandlerFunc(func(req micro.Request) {
		s.goTracked(func() { s.serve(qctx, req) })
	}), micro.WithEndpointSubject(SubjectPrefix+"*"), micro.WithEndpointQueueGroup(QueueGroup))
	if err != nil {
		return fmt.Errorf("reader: add endpoint: %w", err)
	}
	err = svc.AddEndpoint("group", micro.HandlerFunc(func(req micro.Request) {
		s.goTracked(func() { s.serveGroup(qctx, req) })
	}), micro.WithEndpointSubject(GroupSubjectPrefix+"*"), micro.WithEndpointQueueGroup(QueueGroup))
	if err != nil {
		return fmt.Errorf("reader: add endpoint: %w", err)
	}
	if err := svcinfo.AddEndpoint(svc, s.info); err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	if err := s.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	s.log.Info("reader serving", "subject", SubjectPrefix+"*", "dir", s.cfg.Dir)
	if ready != nil {
		ready()
	}
	sweep := time.NewTicker(max(s.cfg.IdleTimeout/4, 100*time.Millisecond))
	defer sweep.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			svc.Stop()
			return nil
		case now := <-sweep.C:
			s.sweep(now)
		case <-poll.C:
			s.mu.Lock()
			var ms []string
			for m := range s.models {
				ms = append(ms, m)
			}
			s.mu.Unlock()
			for _, m := range ms {
				s.goUpdate(qctx, m)
			}
		}
	}
}

// goUpdate runs update(m) in a goroutine Run waits for.
func (s *Server) goUpdate(ctx context.Context, m string) {
	s.goTracked(func() { s.update(ctx, m) })
}

// goTracked runs f in a goroutine Run waits for, unless Run is returning.
func (s *Server) goTracked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goTrackedLocked(f)
}

// goTrackedLocked is goTracked with s.mu held; false when Run is
// returning (f does not run).
func (s *Server) goTrackedLocked(f func()) bool {
	if s.closing {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Active is the number of queries running.
func (s *Server) Active() int64 { return s.active.Load() }

// Stats is what a reader reports in the data of its endpoint's $SRV.STATS.
type Stats struct {
	Active   int64            `json:"active"`        // queries running
	Versions map[string]int64 `json:"versions"`      // model → version served
	Fetched  int64            `json:"fetched_bytes"` // snapshot bytes downloaded since start
	Reused   int64            `json:"reused_bytes"`  // snapshot bytes copied from a held version
}

// Stats returns the reader's current figures.
func (s *Server) Stats() Stats {
	st := Stats{Active: s.active.Load(), Versions: map[string]int64{}, Fetched: s.fetched.Load(), Reused: s.reused.Load()}
	s.mu.Lock()
	for m, ms := range s.models {
		if ms.latest != 0 {
			st.Versions[m] = ms.latest
		}
	}
	s.mu.Unlock()
	return st
}

// serve answers one query request on a model: error replies carry
// micro's error headers; the result goes as pages to the request's reply
// subject.
func (s *Server) serve(ctx context.Context, req micro.Request) {
	m := strings.TrimPrefix(req.Subject(), SubjectPrefix)
	s.admit(ctx, req, m, model.ValidateID(m), func(qctx context.Context, r Request) error {
		ov, err := s.acquire(qctx, ctx, m, r.Version)
		if err != nil {
			return err
		}
		defer s.release(ov)
		hdr := nats.Header{}
		hdr.Set(HeaderModel, ov.v.Model)
		hdr.Set(HeaderVersion, strconv.FormatInt(ov.v.Version, 10))
		return s.stream(qctx, ov.db, hdr, m, r, req.Reply())
	})
}

// admit decodes a request on name (a model or a group; bad, when not nil,
// refuses it), holds a query slot and the time limit, and runs run; its
// error, or the time limit's, is the error reply. run sends the pages.
func (s *Server) admit(ctx context.Context, req micro.Request, name string, bad error, run func(qctx context.Context, r Request) error) {
	reply := req.Reply()
	if reply == "" {
		return
	}
	var r Request
	err := bad
	if err == nil {
		r, err = DecodeRequest(req.Data())
	}
	if err != nil {
		s.fail(reply, name, err)
		return
	}
	s.active.Add(1)
	defer s.active.Add(-1)
	limit := r.timeout(s.cfg.MaxTime)
	qctx, cancel := context.WithTimeoutCause(ctx, limit, timeLimitError{name, limit})
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-qctx.Done():
		s.fail(reply, name, context.Cause(qctx))
		return
	}
	if err := run(qctx, r); err != nil && !errors.Is(err, errCancelled) {
		if qctx.Err() != nil {
			err = context.Cause(qctx)
		}
		s.fail(reply, name, err)
	}
}

// timeLimitError ends a query that ran past its time limit; it is an
// ErrLimit.
type timeLimitError struct {
	model string
	limit time.Duration
}

func (e timeLimitError) Error() string {
	return fmt.Sprintf("%v: the query of %s ran longer than %s (the reader's time limit): narrow it, or raise --max-time", ErrLimit, e.model, e.limit)
}

func (e timeLimitError) Is(target error) bool { return target == ErrLimit }

// errCancelled ends a query the client cancelled or left.
var errCancelled = errors.New("cancelled by the client")

// fail sends err as an error reply (micro's headers), its first line only.
func (s *Server) fail(reply, m string, err error) {
	code := CodeInternal
	switch {
	case errors.As(err, new(timeLimitError)):
		code = CodeTimeout
	case errors.Is(err, ErrLimit):
		code = CodeTooLarge
	case errors.Is(err, model.ErrInvalid):
		code = CodeInvalid
	case errors.Is(err, model.ErrNotFound):
		code = CodeNotFound
	case errors.Is(err, context.Canceled):
		code = CodeUnavailable
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	s.errs.Record(fmt.Errorf("query on %s: %s", m, msg))
	if code == CodeInternal {
		s.log.Warn("query failed", "model", m, "err", msg)
	}
	out := nats.NewMsg(reply)
	out.Header.Set(micro.ErrorHeader, msg)
	out.Header.Set(micro.ErrorCodeHeader, code)
	s.nc.PublishMsg(out)
}

// stream runs r on db and sends the result to reply in pages (see the
// package doc), each with the headers hdr (what the result comes from;
// name, the model or group, is for the log): page 1 at once, each next
// one when the client asks for it on the page's HeaderNext subject, the
// page after it built meanwhile.
func (s *Server) stream(ctx context.Context, db *sql.DB, hdr nats.Header, name string, r Request, reply string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	defer conn.Close()
	q := r.SQL
	if r.Render != "" {
		q = RenderSQL(r.SQL, r.Render)
	}
	control := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(control)
	if err != nil {
		return fmt.Errorf("reader: %w", err)
	}
	defer sub.Unsubscribe()
	p := &pager{s: s, ctx: ctx, hdr: hdr, name: name, reply: reply, control: control, sub: sub,
		maxRows: lower(r.MaxRows, s.cfg.MaxRows), maxBytes: lower(r.MaxBytes, s.cfg.MaxBytes)}
	queried := false // f runs only once the query ran: an error before is DuckDB's
	err = duck.QueryArrow(ctx, conn, q, func(rr array.RecordReader) error {
		queried = true
		w := ipc.NewWriter(&p.buf, ipc.WithSchema(rr.Schema()))
		for rr.Next() {
			if err := p.add(w, rr.RecordBatch()); err != nil {
				return err
			}
		}
		if err := rr.Err(); err != nil {
			return duckErr(err)
		}
		if err := w.Close(); err != nil { // the schema when no rows, and the end-of-stream marker
			return fmt.Errorf("reader: %w", err)
		}
		return p.flush(true)
	})
	if err != nil && !queried {
		return duckErr(err)
	}
	return err
}

// duckErr is a DuckDB error as the user's: the query's fault.
func duckErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
}

// pager cuts one query's Arrow IPC stream into pages.
type pager struct {
	s       *Server
	ctx     context.Context
	hdr     nats.Header // set on every page
	name    string      // the model or group queried
	reply   string
	control string
	sub     *nats.Subscription

	buf      bytes.Buffer // the IPC bytes of the page being built
	pageRows int64
	page     int
	rows     int64 // rows so far
	sent     int64 // bytes so far
	maxRows  int64
	maxBytes int64
}

// add writes rec to the page being built, in slices of about half a page,
// sending the page first when the slice would not fit.
func (p *pager) add(w *ipc.Writer, rec arrow.RecordBatch) error {
	n := rec.NumRows()
	if n == 0 {
		return nil
	}
	limit := int64(p.s.cfg.PageBytes)
	perRow := max(recordBytes(rec)/n, 1)
	step := max(limit/2/perRow, 1)
	for off := int64(0); off < n; off += step {
		end := min(off+step, n)
		if p.rows+(end-off) > p.maxRows {
			return fmt.Errorf("%w: the result has more than %d rows (the reader's row limit): narrow the query or add a LIMIT", ErrLimit, p.maxRows)
		}
		est := (end - off) * perRow
		if p.pageRows > 0 && int64(p.buf.Len())+est > limit {
			if err := p.flush(false); err != nil {
				return err
			}
		}
		slice := rec.NewSlice(off, end)
		err := w.Write(slice)
		slice.Release()
		if err != nil {
			return fmt.Errorf("reader: %w", err)
		}
		p.rows += end - off
		p.pageRows += end - off
		if max := p.s.nc.MaxPayload() - 4096; int64(p.buf.Len()) > max {
			return fmt.Errorf("%w: a row of the result takes more than %d bytes, the NATS message limit", ErrLimit, max)
		}
	}
	return nil
}

// flush sends the page built so far (the last one when last is set),
// waiting first for the client to ask for it when it is not the first.
func (p *pager) flush(last bool) error {
	p.page++
	if p.sent+int64(p.buf.Len()) > p.maxBytes {
		return fmt.Errorf("%w: the result takes more than %d bytes of Arrow IPC (the reader's byte limit): narrow the query or add a LIMIT", ErrLimit, p.maxBytes)
	}
	if p.page > 1 {
		if err := p.await(); err != nil {
			return err
		}
	}
	msg := nats.NewMsg(p.reply)
	for k, v := range p.hdr {
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderPage, strconv.Itoa(p.page))
	msg.Header.Set(HeaderRows, strconv.FormatInt(p.pageRows, 10))
	if last {
		msg.Header.Set(HeaderLast, "true")
	} else {
		msg.Header.Set(HeaderNext, p.control)
	}
	msg.Data = bytes.Clone(p.buf.Bytes())
	p.sent += int64(len(msg.Data))
	p.buf.Reset()
	p.pageRows = 0
	if err := p.s.nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("reader: send page: %w", err)
	}
	return nil
}

// await waits for the client's next control message: nil on "next",
// errCancelled on "cancel" or when none comes within ClientTimeout.
func (p *pager) await() error {
	ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.ClientTimeout)
	defer cancel()
	msg, err := p.sub.NextMsgWithContext(ctx)
	switch {
	case err == nil && string(msg.Data) == ControlNext:
		return nil
	case err == nil:
		return errCancelled
	case p.ctx.Err() != nil:
		return context.Cause(p.ctx)
	default:
		p.s.log.Debug("client asked for no page in time", "query", p.name, "timeout", p.s.cfg.ClientTimeout)
		return errCancelled
	}
}

// recordBytes is the size of rec's buffers (children and dictionaries
// included): about what its IPC record batch takes.
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, c := range rec.Columns() {
		n += dataBytes(c.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	if d == nil {
		return 0
	}
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	if d.DataType().ID() == arrow.DICTIONARY {
		n += dataBytes(d.Dictionary())
	}
	return n
}
