package reader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/model"
)

// Options configure Query. The zero value asks for the latest version
// with the reader's limits.
type Options struct {
	Version  int64         // 0: the latest
	MaxRows  int64         // lower the reader's row limit (0: the reader's)
	MaxBytes int64         // lower the reader's byte limit (0: the reader's)
	Timeout  time.Duration // lower the reader's time limit (0: the reader's)
	Render   string        // "", or table, csv, json: see Request.Render
	Partial  bool          // a group query leaves out failing members (Request.Partial)
	// Wait bounds the wait for the first page, and for each next one;
	// default 30 s. No first page in time is ErrNoReader.
	Wait time.Duration
}

// Result is a query result being received: Arrow record batches read page
// by page, each next page asked for when the one before starts being
// read. Close it (always): before the last page it tells the reader to
// cancel the query.
type Result struct {
	Model   string
	Version int64 // the version the whole result comes from
	// A group query's result has these instead of Model and Version.
	Group   string
	Members []Member      // the members the result comes from, with their versions
	Failed  []MemberError // the members a partial query left out

	pages *pages
	rd    *ipc.Reader
}

// Query sends sql to a reader of model m on nc and returns once the first
// page arrived. It returns ErrNoReader when no reader answers, errors
// wrapping model.ErrInvalid, model.ErrNotFound or ErrLimit for the
// reader's refusals (their message is the reader's), and a NATS error
// otherwise.
func Query(ctx context.Context, nc *nats.Conn, m, sql string, opts Options) (*Result, error) {
	st, err := QueryStream(ctx, nc, m, sql, opts)
	if err != nil {
		return nil, err
	}
	return result(st)
}

// QueryGroup is Query over group g (teatree.group.<g>): the union of its
// members' latest versions. The result's Members lists the members used
// with their versions, Failed those a partial query left out. Errors: as
// Query's; a failing member's names it.
func QueryGroup(ctx context.Context, nc *nats.Conn, g, sql string, opts Options) (*Result, error) {
	st, err := QueryGroupStream(ctx, nc, g, sql, opts)
	if err != nil {
		return nil, err
	}
	return result(st)
}

// result reads st as Arrow record batches.
func result(st *Stream) (*Result, error) {
	m := st.pages.subject
	res := &Result{Model: st.Model, Version: st.Version, Group: st.Group, Members: st.Members, Failed: st.Failed, pages: st.pages}
	var err error
	if res.rd, err = ipc.NewReader(st.pages); err != nil {
		res.Close()
		if st.pages.err != nil {
			return nil, st.pages.err
		}
		return nil, fmt.Errorf("reader: query %s: bad Arrow IPC reply: %w", m, err)
	}
	return res, nil
}

// Stream is a query result as the bytes of its Arrow IPC stream, the
// reader's pages passed through as they are read (each next page asked
// for when the one before is taken). Close it (always): before the last
// page it tells the reader to cancel the query.
type Stream struct {
	Model   string
	Version int64 // the version the whole result comes from
	Group   string
	Members []Member      // a group query's members and their versions
	Failed  []MemberError // the members a partial group query left out

	pages *pages
}

// QueryStream is Query returning the result's Arrow IPC stream unread
// (for teactl query --format arrow). Errors: as Query's for the first
// page; Read returns those of the later ones.
func QueryStream(ctx context.Context, nc *nats.Conn, m, sql string, opts Options) (*Stream, error) {
	if err := model.ValidateID(m); err != nil {
		return nil, err
	}
	return queryStream(ctx, nc, Subject(m), sql, opts)
}

// QueryGroupStream is QueryGroup returning the result's Arrow IPC stream
// unread.
func QueryGroupStream(ctx context.Context, nc *nats.Conn, g, sql string, opts Options) (*Stream, error) {
	if err := model.ValidateID(g); err != nil {
		return nil, fmt.Errorf("group %q: %w", g, err)
	}
	return queryStream(ctx, nc, GroupSubject(g), sql, opts)
}

// queryStream sends the query to subject and returns once the first page
// arrived.
func queryStream(ctx context.Context, nc *nats.Conn, subject, sql string, opts Options) (*Stream, error) {
	r := Request{SQL: sql, Version: opts.Version, MaxRows: opts.MaxRows, MaxBytes: opts.MaxBytes, TimeoutMS: opts.Timeout.Milliseconds(), Render: opts.Render, Partial: opts.Partial}
	body, err := r.encode()
	if err != nil {
		return nil, err
	}
	if opts.Wait == 0 {
		opts.Wait = 30 * time.Second
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("reader: query %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Reply, msg.Data = inbox, body
	if err := nc.PublishMsg(msg); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("reader: query %s: %w", subject, err)
	}
	p := &pages{ctx: ctx, nc: nc, sub: sub, wait: opts.Wait, subject: subject}
	first, err := p.next()
	if err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	st := &Stream{Model: first.Header.Get(HeaderModel), Group: first.Header.Get(HeaderGroup), pages: p}
	st.Version, _ = strconv.ParseInt(first.Header.Get(HeaderVersion), 10, 64)
	if h := first.Header.Get(HeaderMembers); h != "" {
		if err := json.Unmarshal([]byte(h), &st.Members); err != nil {
			st.Close()
			return nil, fmt.Errorf("reader: query %s: bad %s header: %w", subject, HeaderMembers, err)
		}
	}
	if h := first.Header.Get(HeaderFailed); h != "" {
		if err := json.Unmarshal([]byte(h), &st.Failed); err != nil {
			st.Close()
			return nil, fmt.Errorf("reader: query %s: bad %s header: %w", subject, HeaderFailed, err)
		}
	}
	p.take(first)
	return st, nil
}

// Read reads the Arrow IPC stream; io.EOF after the last page.
func (s *Stream) Read(b []byte) (int, error) { return s.pages.Read(b) }

// Err is the error that ended Read early (a reader's error reply, a
// timeout), nil while none did.
func (s *Stream) Err() error { return s.pages.err }

// Close releases the stream; before the last page it asks the reader to
// cancel the query.
func (s *Stream) Close() { s.pages.close() }

// Schema is the result's schema.
func (r *Result) Schema() *arrow.Schema { return r.rd.Schema() }

// Next advances to the next record batch; false at the end or on an error
// (Err).
func (r *Result) Next() bool { return r.rd.Next() }

// RecordBatch is the current record batch, valid until the next Next.
func (r *Result) RecordBatch() arrow.RecordBatch { return r.rd.RecordBatch() }

// Err is the error that ended Next, nil at the end of the result.
func (r *Result) Err() error {
	if r.pages.err != nil {
		return r.pages.err
	}
	if err := r.rd.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reader: query %s: bad Arrow IPC reply: %w", r.pages.subject, err)
	}
	return nil
}

// Close releases the result; before the last page it asks the reader to
// cancel the query.
func (r *Result) Close() {
	if r.rd != nil {
		r.rd.Release()
	}
	r.pages.close()
}

// pages reads the reply pages of one query as one byte stream (their
// concatenation is one Arrow IPC stream), asking for the next page as
// soon as the current one is taken.
type pages struct {
	ctx     context.Context
	nc      *nats.Conn
	sub     *nats.Subscription
	wait    time.Duration
	subject string // the query's subject
	cur     []byte
	control string // subject to ask the next page on
	last    bool   // the last page was taken
	n       int    // pages taken
	err     error
}

// next receives the next reply message and returns it when it is a page.
func (p *pages) next() (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.wait)
	defer cancel()
	msg, err := p.sub.NextMsgWithContext(ctx)
	switch {
	case err == nil:
	case p.ctx.Err() != nil:
		return nil, p.ctx.Err()
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w on %s", ErrNoReader, p.subject)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%w on %s within %s", ErrNoReader, p.subject, p.wait)
	default:
		return nil, fmt.Errorf("reader: query %s: %w", p.subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return nil, replyErr(code, msg.Header.Get(micro.ErrorHeader))
	}
	return msg, nil
}

// take makes msg the current page and asks for the one after it.
func (p *pages) take(msg *nats.Msg) {
	p.cur = msg.Data
	p.n++
	p.last = msg.Header.Get(HeaderLast) == "true"
	p.control = msg.Header.Get(HeaderNext)
	if !p.last && p.control != "" {
		if err := p.nc.Publish(p.control, []byte(ControlNext)); err != nil {
			p.err = fmt.Errorf("reader: query %s: %w", p.subject, err)
		}
	}
}

// close asks the reader to cancel the query when the last page was not
// taken, and unsubscribes from the reply inbox.
func (p *pages) close() {
	if !p.last && p.control != "" {
		p.nc.Publish(p.control, []byte(ControlCancel))
	}
	p.sub.Unsubscribe()
}

// Read implements io.Reader over the pages.
func (p *pages) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if p.last {
			return 0, io.EOF
		}
		msg, err := p.next()
		if err != nil {
			p.err = err
			return 0, err
		}
		p.take(msg)
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// replyErr maps an error reply to the error Query returns.
func replyErr(code, msg string) error {
	switch code {
	case CodeInvalid:
		return fmt.Errorf("%w: %s", model.ErrInvalid, trimPrefix(msg, model.ErrInvalid))
	case CodeNotFound:
		return fmt.Errorf("%w: %s", model.ErrNotFound, trimPrefix(msg, model.ErrNotFound))
	case CodeTimeout, CodeTooLarge:
		return fmt.Errorf("%w: %s", ErrLimit, trimPrefix(msg, ErrLimit))
	}
	return fmt.Errorf("reader: %s (code %s)", msg, code)
}

// trimPrefix drops the sentinel's text the reader's message starts with,
// which the client's error adds again.
func trimPrefix(msg string, sentinel error) string {
	p := sentinel.Error() + ": "
	if len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}
