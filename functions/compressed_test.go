package functions

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
)

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	t.Helper()
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}

// TestAppendCompressedAndLineDelimited: gzip and zstd CSV and JSON files
// and NDJSON files (plain and compressed) create a table and append to an
// existing one, with the compression and layout told by the name (and the
// format by payload.format where the name has no format extension); an
// empty compressed CSV into a missing table is refused like a plain one;
// compressed Parquet is refused before any read.
func TestAppendCompressedAndLineDelimited(t *testing.T) {
	csv := []byte("id,v\n1,a\n2,b\n")
	arr := []byte(`[{"id":1,"v":"a"},{"id":2,"v":"b"}]`)
	nd := []byte("{\"id\":1,\"v\":\"a\"}\n{\"id\":2,\"v\":\"b\"}\n")
	for _, tc := range []struct {
		name, format string
		data         []byte
	}{
		{"f.csv.gz", "", gzipped(t, csv)},
		{"f.csv.zst", "", zstded(t, csv)},
		{"f.tsv.gz", "", gzipped(t, []byte("id\tv\n1\ta\n2\tb\n"))},
		{"f.json.gz", "", gzipped(t, arr)},
		{"f.json.zst", "", zstded(t, nd)},
		{"f.ndjson", "", nd},
		{"f.jsonl", "", nd},
		{"f.ndjson.gz", "", gzipped(t, nd)},
		{"f.jsonl.zstd", "", zstded(t, nd)},
		{"f.gz", "csv", gzipped(t, csv)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t)
			uri := func(id string) string { return "staging/m/" + id + "/" + tc.name }
			for _, id := range []string{"r1", "r2"} {
				m.put(uri(id), tc.data)
			}
			payload := func(id string) string {
				p := map[string]string{"uri": uri(id)}
				if tc.format != "" {
					p["format"] = tc.format
				}
				return mustJSON(t, map[string]any{"table": "t", "payload": p})
			}
			if res := m.mustApply("append", payload("r1")); res.Rows != 2 {
				t.Fatalf("create: %+v", res)
			}
			if res := m.mustApply("append", payload("r2")); res.Rows != 2 {
				t.Fatalf("append: %+v", res)
			}
			got := m.rows("SELECT id, v, typeof(id) FROM t ORDER BY ALL")
			want := []string{"1|a|BIGINT", "1|a|BIGINT", "2|b|BIGINT", "2|b|BIGINT"}
			if !cmp.Equal(got, want) {
				t.Fatalf("rows %v, want %v", got, want)
			}
		})
	}
	m := newModel(t)
	m.put("staging/m/r1/empty.csv.gz", gzipped(t, []byte("\n")))
	m.applyErr("append", `{"table":"t","payload":{"uri":"staging/m/r1/empty.csv.gz"}}`, "has no rows")
	// An NDJSON name holds one object per line: a pretty-printed object
	// is not valid NDJSON, and the error says so in one line.
	m.put("staging/m/r1/pretty.ndjson", []byte("{\n \"id\": 1\n}\n"))
	err := m.applyErr("append", `{"table":"t","payload":{"uri":"staging/m/r1/pretty.ndjson"}}`, "pretty.ndjson")
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("multi-line error %q", err)
	}
	// DuckDB reports a corrupt gzip or zstd stream as an I/O error; it is
	// the file's fault (model.ErrInvalid), not the disk's.
	big := []byte("id,v\n")
	for i := range 200000 {
		big = fmt.Appendf(big, "%d,value %d\n", i, i)
	}
	corrupt := zstded(t, big)
	for i := len(corrupt) / 2; i < len(corrupt)/2+64; i++ {
		corrupt[i] ^= 0x5a
	}
	m.put("staging/m/r1/notgz.csv.gz", []byte("id,v\n1,a\n"))
	m.applyErr("append", `{"table":"t","payload":{"uri":"staging/m/r1/notgz.csv.gz"}}`, `staged file "notgz.csv.gz" is not a valid CSV file`)
	m.put("staging/m/r1/corrupt.csv.zst", corrupt)
	m.applyErr("append", `{"table":"t","payload":{"uri":"staging/m/r1/corrupt.csv.zst"}}`, `staged file "corrupt.csv.zst" is not a valid CSV file`)
	for _, tc := range []struct{ uri, want string }{
		{"staging/m/r1/f.parquet.gz", "only CSV and JSON files may be compressed"},
		{"staging/m/r1/f.arrow.zst", "only CSV and JSON files may be compressed"},
		{"staging/m/r1/f.gz", "no known file extension"},
	} {
		m.applyErr("append", fmt.Sprintf(`{"table":"t","payload":{"uri":%q}}`, tc.uri), tc.want)
	}
}
