package cli

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"golang.org/x/term"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/reader"
)

// queryOutput is what teactl query writes a result as, and where.
type queryOutput struct {
	// format is table, csv or json (rendered by DuckDB, reader.RenderSQL),
	// arrow (Arrow IPC: the stream format on stdout, the file format in a
	// file) or parquet (a file only).
	format string
	path   string // -o FILE; "" is stdout
}

// outputExts are the extensions -o knows, with the format each writes.
var outputExts = map[string]string{".csv": "csv", ".json": "json", ".arrow": "arrow", ".parquet": "parquet"}

// newQueryOutput checks --format and -o: with -o the extension decides the
// format, and a --format given too must name the same one.
func newQueryOutput(format string, formatSet bool, path string) (queryOutput, error) {
	if path == "" {
		switch format {
		case "table", "csv", "json", "arrow":
			return queryOutput{format: format}, nil
		}
		return queryOutput{}, fmt.Errorf("%w: --format %q: use table, csv, json or arrow", model.ErrInvalid, format)
	}
	ext := strings.ToLower(filepath.Ext(path))
	f, ok := outputExts[ext]
	if !ok {
		return queryOutput{}, fmt.Errorf("%w: -o %s: unknown extension %q: use .parquet, .arrow, .csv or .json", model.ErrInvalid, path, ext)
	}
	if formatSet && format != f {
		return queryOutput{}, fmt.Errorf("%w: --format %s and -o %s disagree: the extension chooses the format, drop --format", model.ErrInvalid, format, path)
	}
	return queryOutput{format: f, path: path}, nil
}

// rendered says whether DuckDB renders the result as text (reader.RenderSQL).
func (o queryOutput) rendered() bool {
	return o.format == "table" || o.format == "csv" || o.format == "json"
}

// checkTerminal refuses Arrow IPC on a terminal.
func (e *env) checkTerminal(o queryOutput) error {
	f, ok := e.stdout.(*os.File)
	if o.format == "arrow" && o.path == "" && ok && term.IsTerminal(int(f.Fd())) {
		return fmt.Errorf("%w: --format arrow writes binary Arrow IPC: redirect stdout to a file or a pipe, or use -o FILE.arrow", model.ErrInvalid)
	}
	return nil
}

// modelAt splits MODEL@N (teactl query, profile) into the model and
// version N, which --version (version, when set) must not contradict; a
// plain MODEL keeps version. The model id is not checked here.
func modelAt(arg string, version int64, versionSet bool) (string, int64, error) {
	m, at, ok := strings.Cut(arg, "@")
	if !ok {
		return arg, version, nil
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil || n < 1 {
		return "", 0, fmt.Errorf("%w: %q: MODEL@N takes a positive version number N", model.ErrInvalid, arg)
	}
	if versionSet && version != n {
		return "", 0, fmt.Errorf("%w: %s says version %d, --version says %d: give one", model.ErrInvalid, arg, n, version)
	}
	return m, n, nil
}

// toOutput calls write with where the result goes: stdout, or for -o a
// temporary file beside o.path (w, and its path tmp), renamed over o.path
// once write succeeded, so a failed query leaves o.path as it was.
func (e *env) toOutput(o queryOutput, write func(w io.Writer, tmp string) error) error {
	if o.path == "" {
		return write(e.stdout, "")
	}
	f, err := os.CreateTemp(filepath.Dir(o.path), "."+filepath.Base(o.path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	bw := bufio.NewWriter(f)
	err = write(bw, tmp)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644) // CreateTemp's 0600 is for the partial file
	}
	if err == nil {
		err = os.Rename(tmp, o.path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// writeArrow writes the record batches of rr as o says: an Arrow IPC
// stream to w (stdout), an Arrow IPC file to w, or a Parquet file at tmp
// (landParquet). Memory holds a batch at a time (the Parquet writer's row
// groups besides). A DuckDB error of rr is model.ErrInvalid, its first
// line.
func writeArrow(ctx context.Context, rr array.RecordReader, o queryOutput, w io.Writer, tmp string) error {
	if o.format == "parquet" {
		return landParquet(ctx, rr, tmp)
	}
	var iw interface {
		Write(arrow.RecordBatch) error
		Close() error
	}
	if o.path == "" {
		bw := bufio.NewWriter(w)
		defer bw.Flush()
		iw = ipc.NewWriter(bw, ipc.WithSchema(rr.Schema()))
	} else {
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(rr.Schema()))
		if err != nil {
			return err
		}
		iw = fw
	}
	for rr.Next() {
		if err := iw.Write(rr.RecordBatch()); err != nil {
			return err
		}
	}
	if err := rr.Err(); err != nil {
		return queryErr(err)
	}
	return iw.Close()
}

// landParquet writes the record batches of rr to the Parquet file path
// with DuckDB's own writer (COPY … TO … (FORMAT parquet), its defaults:
// Snappy, row groups of 122880 rows), from an in-memory DuckDB that scans
// rr as they come. The same batches, from a reader or from the local
// snapshot, give the same file.
func landParquet(ctx context.Context, rr array.RecordReader, path string) error {
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	release, err := duck.RegisterArrow(conn, rr, "result")
	if err != nil {
		return err
	}
	defer release()
	_, err = conn.ExecContext(ctx, "COPY (SELECT * FROM result) TO "+duck.Literal(path)+" (FORMAT parquet)")
	if rerr := rr.Err(); rerr != nil {
		return queryErr(rerr)
	}
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return fmt.Errorf("%w: write Parquet: %s", model.ErrInvalid, msg)
	}
	return nil
}

// queryErr is an error of the query's result as the user's: already one
// (a reader's), else DuckDB's first line wrapping model.ErrInvalid.
func queryErr(err error) error {
	if errors.Is(err, model.ErrInvalid) || errors.Is(err, reader.ErrLimit) || errors.Is(err, context.Canceled) {
		return err
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
}

// localQuery runs q on db, a version opened here, and writes its result
// as o says: rendered by DuckDB (writeQuery), or DuckDB's Arrow record
// batches (writeArrow).
func (e *env) localQuery(ctx context.Context, db *sql.DB, q string, o queryOutput) error {
	if o.rendered() {
		return e.toOutput(o, func(w io.Writer, _ string) error { return writeQuery(ctx, w, db, q, o.format) })
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return e.toOutput(o, func(w io.Writer, tmp string) error {
		var werr error
		err := duck.QueryArrow(ctx, conn, q, func(rr array.RecordReader) error {
			werr = writeArrow(ctx, rr, o, w, tmp)
			return werr
		})
		if err != nil && werr == nil {
			return queryErr(err) // DuckDB refused q
		}
		return err
	})
}
