package functions

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// convertBytes converts data with arrowToParquet in a fresh directory and
// returns the error, failing t if the conversion takes longer than limit
// or succeeds without writing a Parquet file.
func convertBytes(t *testing.T, data []byte, limit time.Duration) error {
	t.Helper()
	src := filepath.Join(t.TempDir(), "in.arrow")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		err     error
		parquet bool
	}
	done := make(chan result, 1)
	go func() {
		dst, err := arrowToParquet(src)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := os.ReadFile(dst)
		os.Remove(dst)
		done <- result{parquet: bytes.HasPrefix(b, []byte("PAR1"))}
	}()
	select {
	case r := <-done:
		if r.err == nil && !r.parquet {
			t.Fatalf("%q: the converted file is not Parquet", data)
		}
		return r.err
	case <-time.After(limit):
		t.Fatalf("converting %d bytes took longer than %v", len(data), limit)
		return nil
	}
}

// nullStream is an Arrow IPC stream of one record batch with one NULL-typed
// column of rows rows: a few hundred bytes whatever rows is, since a NULL
// column has no buffers.
func nullStream(t *testing.T, rows int) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.Null, Nullable: true}}, nil)
	col := array.NewNull(rows)
	defer col.Release()
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(rows))
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// int64Stream is an Arrow IPC stream (or file) of one int64 column of n
// rows, so its record batch body is 8n bytes.
func int64Stream(t *testing.T, file bool, n int) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(memory.NewGoAllocator())
	for i := range n {
		b.Append(int64(i))
	}
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(n))
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

// patchInt64 replaces every little-endian int64 old in data by new.
func patchInt64(data []byte, old, new int64) []byte {
	var o, n [8]byte
	binary.LittleEndian.PutUint64(o[:], uint64(old))
	binary.LittleEndian.PutUint64(n[:], uint64(new))
	return bytes.ReplaceAll(data, o[:], n[:])
}

// TestArrowToParquetBoundsHostileSizes: arrow-go believes the sizes a file
// declares, so a file of a few hundred bytes could make the converter
// allocate gigabytes (a message's metadata or body length, a file block's
// body length) or write a trillion rows (a NULL column needs no data).
// Each is refused quickly, with little memory, as not an Arrow file.
func TestArrowToParquetBoundsHostileSizes(t *testing.T) {
	const bodyLen = 8 * 1000
	hugeMeta := []byte{0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0x7f}
	hugeMeta = append(hugeMeta, make([]byte, 64)...)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"stream metadata of 2 GiB", hugeMeta},
		{"stream body of 1 TiB", patchInt64(int64Stream(t, false, 1000), bodyLen, 1<<40)},
		{"stream body of 3 GiB", patchInt64(int64Stream(t, false, 1000), bodyLen, 3<<30)},
		{"file block body of 3 GiB", patchInt64(int64Stream(t, true, 1000), bodyLen, 3<<30)},
		{"a trillion NULL rows", nullStream(t, 1<<40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := convertBytes(t, tc.data, 20*time.Second)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errNotArrow) {
				t.Fatalf("%d bytes: error %v, want errNotArrow", len(tc.data), err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 512<<20 {
				t.Errorf("%d bytes: the conversion allocated %d MiB", len(tc.data), got>>20)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			t.Log(err)
		})
	}
	// The same files with their true sizes convert.
	for _, data := range [][]byte{int64Stream(t, false, 1000), int64Stream(t, true, 1000), nullStream(t, 100)} {
		if err := convertBytes(t, data, 20*time.Second); err != nil {
			t.Errorf("a valid file: %v", err)
		}
	}
}
