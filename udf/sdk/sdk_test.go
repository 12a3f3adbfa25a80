package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

func input(t *testing.T, vals ...int64) []byte {
	t.Helper()
	b := array.NewInt64Builder(Mem)
	b.AppendValues(vals, nil)
	col := b.NewArray()
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}}, nil), []arrow.Array{col}, int64(len(vals)))
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.Bytes()
}

// TestRun: Run decodes the input, calls the handler (Take keeps rows in
// the order given, repeated), encodes its output; errors and panics of the
// handler come back as errors.
func TestRun(t *testing.T) {
	Handle(func(in arrow.RecordBatch, params json.RawMessage) ([]arrow.RecordBatch, error) {
		var p struct{ Mode string }
		if err := Params(params, &p); err != nil {
			return nil, err
		}
		switch p.Mode {
		case "fail":
			return nil, errors.New("asked to fail")
		case "panic":
			panic("asked to panic")
		}
		out, err := Take(in, []int{2, 0, 0})
		return []arrow.RecordBatch{out}, err
	})
	out, err := Run(input(t, 10, 20, 30), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ipc.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if !r.Next() {
		t.Fatal("no output batch")
	}
	if got := r.RecordBatch().Column(0).(*array.Int64).Int64Values(); len(got) != 3 || got[0] != 30 || got[1] != 10 || got[2] != 10 {
		t.Errorf("output %v, want [30 10 10]", got)
	}
	if _, err := Run(input(t, 1), []byte(`{"mode":"fail"}`)); err == nil || err.Error() != "asked to fail" {
		t.Errorf("fail: %v", err)
	}
	if _, err := Run(input(t, 1), []byte(`{"mode":"panic"}`)); err == nil || !strings.Contains(err.Error(), "panic: asked to panic") {
		t.Errorf("panic: %v", err)
	}
	if _, err := Run([]byte("junk"), nil); err == nil || !strings.Contains(err.Error(), "read the input") {
		t.Errorf("junk input: %v", err)
	}
}
