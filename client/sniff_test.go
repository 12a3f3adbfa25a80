package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// TestStagedNameFromContent: a file whose name tells its kind keeps its
// name; one without a known extension is recognised by its content and
// staged with the extension of what it is; a file that is none of the
// formats is one clear error.
func TestStagedNameFromContent(t *testing.T) {
	dir := t.TempDir()
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	zw, _ := zstd.NewWriter(nil)
	zst := func(b []byte) []byte { return zw.EncodeAll(b, nil) }
	csv := []byte("id,v\n1,a\n")
	nd := []byte("{\"id\":1}\n{\"id\":2}\n")
	pq := filepath.Join(dir, "src.parquet")
	db, err := duck.Open(context.Background(), "", duck.Options{Threads: 1, MemoryLimit: "64MB", ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("COPY (SELECT 1 AS id) TO " + duck.Literal(pq) + " (FORMAT parquet)"); err != nil {
		t.Fatal(err)
	}
	parquet, _ := os.ReadFile(pq)
	for _, tc := range []struct {
		name, format string
		data         []byte
		want         string
	}{
		{"orders.csv", "", csv, "orders.csv"},
		{"orders.csv.gz", "", gz(csv), "orders.csv.gz"},
		{"orders.ndjson.zst", "", zst(nd), "orders.ndjson.zst"},
		{"orders", "", csv, "orders.csv"},
		{"orders.dat", "", gz(csv), "orders.dat.csv.gz"},
		{"orders.gz", "", gz(csv), "orders.csv.gz"},
		{"orders.zst", "", zst(csv), "orders.csv.zst"},
		{"events", "", nd, "events.ndjson"},
		{"events", "", gz(nd), "events.ndjson.gz"},
		{"events", "", []byte(" [{\"id\":1}]"), "events.json"},
		{"events", "", []byte("{\n \"id\": 1\n}\n"), "events.json"},
		{"events", "", zst([]byte(`[{"id":1}]`)), "events.json.zst"},
		{"flights", "", parquet, "flights.parquet"},
		{"batch", "", arrowFile(t, true), "batch.arrow"},
		{"batch", "", arrowFile(t, false), "batch.arrow"},
		// --format: only the compression is sniffed.
		{"orders.txt", "csv", csv, "orders.txt"},
		{"orders.txt", "csv", gz(csv), "orders.txt.gz"},
	} {
		p := filepath.Join(t.TempDir(), tc.name)
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := stagedName(p, tc.format)
		if err != nil || got != tc.want {
			t.Errorf("%s (format %q): %q, %v; want %q", tc.name, tc.format, got, err, tc.want)
		}
	}
	for _, data := range [][]byte{{0, 1, 2, 3, 0xfe, 0xff}, gz([]byte{0, 0, 0, 1}), {}, []byte("\n \n"), []byte("PK\x03\x04\x14\x00")} {
		p := filepath.Join(t.TempDir(), "blob")
		os.WriteFile(p, data, 0o644)
		_, err := stagedName(p, "")
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "is not a Parquet, Arrow IPC, CSV, JSON or NDJSON file") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line saying it is none of the formats", data, err)
		}
	}
}

// arrowFile is an Arrow IPC file (or stream) of one int64 column.
func arrowFile(t *testing.T, file bool) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(memory.NewGoAllocator())
	b.Append(1)
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 1)
	defer rec.Release()
	var buf bytes.Buffer
	var w interface {
		Write(arrow.RecordBatch) error
		Close() error
	}
	if file {
		fw, err := ipc.NewFileWriter(&buf, ipc.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		w = fw
	} else {
		w = ipc.NewWriter(&buf, ipc.WithSchema(schema))
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
