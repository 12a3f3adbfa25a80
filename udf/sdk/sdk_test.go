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

// TestParams: a decode into a plain struct is reused only for the same
// params and the same values before the call; other types decode every
// time. It runs as Run's handler does (the cache is kept only there).
func TestParams(t *testing.T) {
	beginCall()
	defer endCall()
	type plainArgs struct {
		Column string  `json:"column"`
		As     string  `json:"as"`
		Min    float64 `json:"min"`
	}
	for _, c := range []struct {
		before plainArgs
		raw    string
		want   plainArgs
	}{
		{plainArgs{Column: "delay", As: "class"}, `{"as":"x"}`, plainArgs{Column: "delay", As: "x"}},
		{plainArgs{Column: "delay", As: "class"}, `{"as":"x"}`, plainArgs{Column: "delay", As: "x"}},
		{plainArgs{Column: "other", As: "class"}, `{"as":"x"}`, plainArgs{Column: "other", As: "x"}},
		{plainArgs{Column: "other", As: "class"}, `{"as":"y","min":2}`, plainArgs{Column: "other", As: "y", Min: 2}},
		{plainArgs{Column: "other", As: "class"}, `{}`, plainArgs{Column: "other", As: "class"}},
	} {
		p := c.before
		if err := Params(json.RawMessage(c.raw), &p); err != nil {
			t.Fatal(err)
		}
		if p != c.want {
			t.Errorf("Params(%s) into %+v: %+v, want %+v", c.raw, c.before, p, c.want)
		}
	}
	var s struct{ Cols []string }
	for _, raw := range []string{`{"cols":["a"]}`, `{"cols":["a"]}`} {
		s.Cols = nil
		if err := Params(json.RawMessage(raw), &s); err != nil || len(s.Cols) != 1 || s.Cols[0] != "a" {
			t.Errorf("Params(%s) into a slice: %v, %v", raw, s.Cols, err)
		}
	}
	if err := Params(json.RawMessage(`{"column":1}`), &plainArgs{}); err == nil {
		t.Error("a number for a string: no error")
	}
}

// TestRunReusesBuffers: under Run the helpers hand out the last call's
// buffers and the outputs stay right (strings of other lengths, nulls);
// outside Run they allocate.
func TestRunReusesBuffers(t *testing.T) {
	var first, second *float64
	Handle(func(in arrow.RecordBatch, params json.RawMessage) ([]arrow.RecordBatch, error) {
		v, err := Float64s(in.Column(0))
		if err != nil {
			return nil, err
		}
		if first == nil {
			first = &v[0]
		} else {
			second = &v[0]
		}
		s := Strings(len(v))
		valid := make([]bool, len(v))
		for i, x := range v {
			s[i] = strings.Repeat("x", int(x))
			valid[i] = x != 2
		}
		col := StringArray(s, valid)
		defer col.Release()
		return []arrow.RecordBatch{With(in, arrow.Field{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true}, col)}, nil
	})
	for _, c := range []struct {
		in   []int64
		want string
	}{
		{[]int64{3, 1, 2, 4}, "xxx x null xxxx"},
		{[]int64{1, 2, 0}, "x null "},
	} {
		out, err := Run(input(t, c.in...), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ipc.NewReader(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if !r.Next() {
			t.Fatal("no output batch")
		}
		col := r.RecordBatch().Column(1).(*array.String)
		var got []string
		for i := range col.Len() {
			if col.IsNull(i) {
				got = append(got, "null")
			} else {
				got = append(got, col.Value(i))
			}
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("input %v: classes %q, want %q", c.in, strings.Join(got, " "), c.want)
		}
		r.Release()
	}
	if first != second {
		t.Error("the second call of Run got a new buffer from Float64s")
	}
	b := array.NewInt64Builder(Mem)
	b.AppendValues([]int64{1, 2}, nil)
	a := b.NewArray()
	defer a.Release()
	v1, _ := Float64s(a)
	v2, _ := Float64s(a)
	if &v1[0] == &v2[0] {
		t.Error("outside Run, Float64s handed out the same buffer twice")
	}
}
