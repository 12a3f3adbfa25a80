package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/reader"
)

// readerWait is how long teactl query waits for a reader's first page
// before it queries the local snapshot instead. A stack without a reader
// answers at once (NATS no responders).
const readerWait = 10 * time.Second

// remoteQuery runs q on version (0: the latest) of model m through a
// reader and writes its result as o says: rendered by DuckDB on the
// reader with reader.RenderSQL exactly as the local path renders it, or
// as the reader's Arrow record batches (an Arrow IPC stream on stdout is
// the reader's pages passed through). done is false when no reader
// answers, or the reader knows no such model or version (the local path
// then says what is missing): the caller queries the pulled snapshot
// instead.
func (e *env) remoteQuery(ctx context.Context, nc *nats.Conn, m, q string, version int64, o queryOutput) (done bool, err error) {
	opts := reader.Options{Version: version, Wait: readerWait}
	if o.rendered() {
		opts.Render = o.format
	}
	st, err := reader.QueryStream(ctx, nc, m, q, opts)
	switch {
	case errors.Is(err, reader.ErrNoReader), errors.Is(err, model.ErrNotFound):
		return false, nil
	case err != nil:
		return true, err
	}
	return true, e.writeStream(ctx, st, m, o)
}

// groupQuery runs q over group g, the union of the members' latest
// versions, through a reader, else (none answers, or local) on their
// pulled snapshots attached to one DuckDB (duck.OpenUnion, as a reader
// does): both give the same result. partial leaves out the members that
// fail. The members used, with their versions, and those left out go to
// stderr, one line each:
//
//	group flights: flights-2001-01@3 flights-2001-02@5
//	group flights: left out flights-2001-03: model "flights-2001-03" has no published version yet
func (e *env) groupQuery(ctx context.Context, g, q string, partial, local bool, o queryOutput) error {
	if !local {
		done := false
		err := e.with(false, false, func(d *session) error {
			opts := reader.Options{Wait: readerWait, Partial: partial}
			if o.rendered() {
				opts.Render = o.format
			}
			st, err := reader.QueryGroupStream(ctx, d.NC, g, q, opts)
			if errors.Is(err, reader.ErrNoReader) {
				return nil
			}
			done = true
			if err != nil {
				return err
			}
			e.printMembers(g, st.Members, st.Failed)
			return e.writeStream(ctx, st, "group "+g, o)
		})
		if done || err != nil {
			return err
		}
	}
	return e.with(true, true, func(d *session) error {
		ids, err := d.Ctl.GroupMembers(ctx, g)
		if err != nil {
			return err
		}
		var members []reader.Member
		var failed []reader.MemberError
		var union []duck.UnionMember
		for _, m := range ids {
			v, err := d.client.Version(ctx, m, 0)
			var path string
			if err == nil {
				path, err = d.client.Snapshot(ctx, v)
			}
			if err != nil {
				if !partial {
					return fmt.Errorf("group %s: member %s: %w", g, m, err)
				}
				msg, _, _ := strings.Cut(err.Error(), "\n")
				failed = append(failed, reader.MemberError{Model: m, Error: msg})
				continue
			}
			members = append(members, reader.Member{Model: m, Version: v.Version})
			union = append(union, duck.UnionMember{Path: path, Tables: v.TableNames()})
		}
		if len(members) == 0 {
			return fmt.Errorf("group %s: every member failed: %s: %s", g, failed[0].Model, failed[0].Error)
		}
		db, err := duck.OpenUnion(ctx, union, duck.Options{})
		if err != nil {
			return err
		}
		defer db.Close()
		e.printMembers(g, members, failed)
		return e.localQuery(ctx, db, q, o)
	})
}

// fanOutQuery runs q over group g by fan-out (reader.QueryFanOut): one
// partial query per member through the readers, merged in a DuckDB here,
// then printed as a local query is. Members go to stderr as for
// groupQuery.
func (e *env) fanOutQuery(ctx context.Context, g, q string, partial bool, o queryOutput) error {
	return e.with(true, false, func(d *session) error {
		ids, err := d.Ctl.GroupMembers(ctx, g)
		if err != nil {
			return err
		}
		f, err := reader.QueryFanOut(ctx, d.NC, ids, q, reader.Options{Wait: readerWait, Partial: partial})
		if errors.Is(err, reader.ErrNoReader) {
			return fmt.Errorf("group %s: %w: --fan-out needs running readers (cmd/reader; teactl dev starts one), or drop it", g, err)
		}
		if err != nil {
			return fmt.Errorf("group %s: %w", g, err)
		}
		defer f.Close()
		e.printMembers(g, f.Members, f.Failed)
		return e.localQuery(ctx, f.DB, f.SQL, o)
	})
}

// printMembers prints on stderr the members a group query used and those
// it left out (groupQuery).
func (e *env) printMembers(g string, members []reader.Member, failed []reader.MemberError) {
	fmt.Fprintf(e.stderr, "group %s:", g)
	for _, m := range members {
		fmt.Fprintf(e.stderr, " %s@%d", m.Model, m.Version)
	}
	fmt.Fprintln(e.stderr)
	for _, f := range failed {
		fmt.Fprintf(e.stderr, "group %s: left out %s: %s\n", g, f.Model, f.Error)
	}
}

// writeStream writes the result st of a query on name as o says, and
// closes st.
func (e *env) writeStream(ctx context.Context, st *reader.Stream, name string, o queryOutput) error {
	defer st.Close()
	m := name
	return e.toOutput(o, func(w io.Writer, tmp string) error {
		if o.format == "arrow" && o.path == "" {
			_, err := io.Copy(w, st)
			if st.Err() != nil {
				return st.Err()
			}
			return err
		}
		rd, err := ipc.NewReader(st)
		if err != nil {
			if st.Err() != nil {
				return st.Err()
			}
			return fmt.Errorf("reader: query %s: bad Arrow IPC reply: %w", m, err)
		}
		defer rd.Release()
		if o.rendered() {
			err = printRows(w, &remoteRows{rd: rd, st: st}, o.format)
		} else {
			err = writeArrow(ctx, rd, o, w, tmp)
		}
		if st.Err() != nil {
			return st.Err()
		}
		return err
	})
}

// remoteRows reads a reader's result of VARCHAR columns (reader.RenderSQL)
// as printRows reads *sql.Rows.
type remoteRows struct {
	rd  *ipc.Reader
	st  *reader.Stream
	rec arrow.RecordBatch
	row int
}

func (r *remoteRows) Columns() ([]string, error) {
	fields := r.rd.Schema().Fields()
	cols := make([]string, len(fields))
	for i, f := range fields {
		cols[i] = f.Name
	}
	return cols, nil
}

func (r *remoteRows) Next() bool {
	r.row++
	for r.rec == nil || r.row >= int(r.rec.NumRows()) {
		if !r.rd.Next() {
			return false
		}
		r.rec, r.row = r.rd.RecordBatch(), 0
	}
	return true
}

// stringColumn is an Arrow string array (utf8 or large utf8).
type stringColumn interface {
	IsNull(i int) bool
	Value(i int) string
}

// Scan sets each *sql.NullString in dest to the current row's column.
func (r *remoteRows) Scan(dest ...any) error {
	if len(dest) != int(r.rec.NumCols()) {
		return fmt.Errorf("reader: %d columns, scanned into %d", r.rec.NumCols(), len(dest))
	}
	for i, d := range dest {
		col, ok := r.rec.Column(i).(stringColumn)
		p, okDest := d.(*sql.NullString)
		if !ok || !okDest {
			return fmt.Errorf("reader: column %d is %s, not VARCHAR", i, r.rec.Column(i).DataType())
		}
		if col.IsNull(r.row) {
			*p = sql.NullString{}
		} else {
			*p = sql.NullString{String: col.Value(r.row), Valid: true}
		}
	}
	return nil
}

// Err is the reader's error (a refusal, a limit) or a bad reply's.
func (r *remoteRows) Err() error {
	if err := r.st.Err(); err != nil {
		return err
	}
	if err := r.rd.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reader: query %s: bad Arrow IPC reply: %w", r.st.Model, err)
	}
	return nil
}
