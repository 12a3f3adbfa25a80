package functions

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// errNotArrow marks a payload that is not a readable Arrow IPC file or
// stream, or whose types Parquet cannot hold.
var errNotArrow = errors.New("not a valid Arrow IPC file or stream")

// arrowFileMagic starts (and ends) an Arrow IPC file; a stream starts with
// a message instead.
const arrowFileMagic = "ARROW1"

// parquetRowGroupRows is the row-group length of converted files: DuckDB's
// own row-group size (122,880 rows), which bounds the memory one buffered
// row group takes.
const parquetRowGroupRows = 122880

// arrowToParquet converts the Arrow IPC file or stream at src into a
// Parquet file in the same directory (which DuckDB may read) and returns
// its path; the caller removes it. DuckDB 1.4 has no built-in Arrow IPC
// reader and duckdb-go's Arrow API needs the duckdb_arrow build tag, so
// the payload takes the Parquet path instead: arrow-go's pqarrow keeps the
// Arrow types (decimals, timestamps with zone, lists, structs, maps,
// dictionaries as their values). Errors about the file's content wrap
// errNotArrow; a panic in the decoder on a hostile file is one too.
func arrowToParquet(src string) (dst string, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(src), ".arrow-*.parquet")
	if err != nil {
		return "", err
	}
	name := out.Name()
	err = convertArrow(in, out)
	// The Parquet writer closes out on success; close it on failure.
	if cerr := out.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = fmt.Errorf("convert to parquet: %w", cerr)
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// convertArrow reads an Arrow IPC file or stream from in and writes it to
// out as Parquet.
func convertArrow(in io.ReadSeeker, out io.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: the decoder failed: %v", errNotArrow, r)
		}
	}()
	var magic [len(arrowFileMagic)]byte
	n, _ := io.ReadFull(in, magic[:])
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	mem := memory.NewGoAllocator()
	var (
		schema *arrow.Schema
		next   func() (arrow.RecordBatch, error) // (nil, nil) at the end
	)
	if string(magic[:n]) == arrowFileMagic {
		rs, ok := in.(ipc.ReadAtSeeker)
		if !ok {
			return fmt.Errorf("arrow file reader needs random access")
		}
		fr, err := ipc.NewFileReader(rs, ipc.WithAllocator(mem))
		if err != nil {
			return fmt.Errorf("%w: %v", errNotArrow, err)
		}
		defer fr.Close()
		schema = fr.Schema()
		next = func() (arrow.RecordBatch, error) {
			rec, err := fr.Read()
			if err == io.EOF {
				return nil, nil
			}
			return rec, err
		}
	} else {
		sr, err := ipc.NewReader(in, ipc.WithAllocator(mem))
		if err != nil {
			return fmt.Errorf("%w: %v", errNotArrow, err)
		}
		defer sr.Release()
		schema = sr.Schema()
		next = func() (arrow.RecordBatch, error) {
			if sr.Next() {
				return sr.RecordBatch(), nil
			}
			return nil, sr.Err()
		}
	}
	if schema == nil || schema.NumFields() == 0 {
		return fmt.Errorf("%w: the schema has no fields", errNotArrow)
	}
	props := parquet.NewWriterProperties(parquet.WithAllocator(mem), parquet.WithMaxRowGroupLength(parquetRowGroupRows))
	w, err := pqarrow.NewFileWriter(schema, out, props, pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(mem)))
	if err != nil {
		return fmt.Errorf("%w: schema %s cannot be stored: %v", errNotArrow, schema, err)
	}
	for {
		rec, err := next()
		if err != nil {
			w.Close()
			return fmt.Errorf("%w: %v", errNotArrow, err)
		}
		if rec == nil {
			break
		}
		if err := w.WriteBuffered(rec); err != nil {
			w.Close()
			return fmt.Errorf("%w: %v", errNotArrow, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("convert to parquet: %w", err)
	}
	return nil
}
