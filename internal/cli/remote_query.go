package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/reader"
)

// readerWait is how long teactl query waits for a reader's first page
// before it queries the local snapshot instead. A stack without a reader
// answers at once (NATS no responders).
const readerWait = 10 * time.Second

// remoteQuery runs q on version (0: the latest) of model m through a
// reader and prints it in format, rendered by DuckDB on the reader with
// reader.RenderSQL exactly as the local path renders it. done is false
// when no reader answers, or the reader knows no such model or version
// (the local path then says what is missing): the caller queries the
// pulled snapshot instead.
func (e *env) remoteQuery(ctx context.Context, nc *nats.Conn, m, q string, version int64, format string) (done bool, err error) {
	res, err := reader.Query(ctx, nc, m, q, reader.Options{Version: version, Render: format, Wait: readerWait})
	switch {
	case errors.Is(err, reader.ErrNoReader), errors.Is(err, model.ErrNotFound):
		return false, nil
	case err != nil:
		return true, err
	}
	defer res.Close()
	return true, printRows(e.stdout, &remoteRows{res: res}, format)
}

// remoteRows reads a reader's result of VARCHAR columns (reader.RenderSQL)
// as printRows reads *sql.Rows.
type remoteRows struct {
	res *reader.Result
	rec arrow.RecordBatch
	row int
}

func (r *remoteRows) Columns() ([]string, error) {
	fields := r.res.Schema().Fields()
	cols := make([]string, len(fields))
	for i, f := range fields {
		cols[i] = f.Name
	}
	return cols, nil
}

func (r *remoteRows) Next() bool {
	r.row++
	for r.rec == nil || r.row >= int(r.rec.NumRows()) {
		if !r.res.Next() {
			return false
		}
		r.rec, r.row = r.res.RecordBatch(), 0
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

func (r *remoteRows) Err() error { return r.res.Err() }
