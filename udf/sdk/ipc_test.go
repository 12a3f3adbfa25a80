package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// everyType is a batch of n rows with a column of every type of the lean
// codec, every third value null in the nullable ones.
func everyType(t testing.TB, n int) arrow.RecordBatch {
	t.Helper()
	mem := memory.NewGoAllocator()
	fields := []arrow.Field{
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
		{Name: "i16", Type: arrow.PrimitiveTypes.Int16, Nullable: true},
		{Name: "i32", Type: arrow.PrimitiveTypes.Int32},
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "u8", Type: arrow.PrimitiveTypes.Uint8, Nullable: true},
		{Name: "u16", Type: arrow.PrimitiveTypes.Uint16, Nullable: true},
		{Name: "u32", Type: arrow.PrimitiveTypes.Uint32, Nullable: true},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64, Nullable: true},
		{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "b", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "d32", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "d64", Type: arrow.FixedWidthTypes.Date64, Nullable: true},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond}, Nullable: true},
		{Name: "tstz", Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}, Nullable: true},
		{Name: "dec", Type: &arrow.Decimal128Type{Precision: 18, Scale: 3}, Nullable: true},
		{Name: "", Type: arrow.BinaryTypes.String},
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for i := range n {
		for c, f := range fields {
			fb := b.Field(c)
			if f.Nullable && i%3 == 1 {
				fb.AppendNull()
				continue
			}
			switch fb := fb.(type) {
			case *array.Int8Builder:
				fb.Append(int8(i))
			case *array.Int16Builder:
				fb.Append(int16(i * 7))
			case *array.Int32Builder:
				fb.Append(int32(-i))
			case *array.Int64Builder:
				fb.Append(int64(i) << 40)
			case *array.Uint8Builder:
				fb.Append(uint8(i))
			case *array.Uint16Builder:
				fb.Append(uint16(i))
			case *array.Uint32Builder:
				fb.Append(uint32(i))
			case *array.Uint64Builder:
				fb.Append(uint64(i) << 50)
			case *array.Float32Builder:
				fb.Append(float32(i) / 3)
			case *array.Float64Builder:
				fb.Append(float64(i) / 7)
			case *array.BooleanBuilder:
				fb.Append(i%2 == 0)
			case *array.StringBuilder:
				fb.Append(strings.Repeat("é", i%5))
			case *array.BinaryBuilder:
				fb.Append([]byte{byte(i), 0, byte(i >> 8)})
			case *array.Date32Builder:
				fb.Append(arrow.Date32(i))
			case *array.Date64Builder:
				fb.Append(arrow.Date64(int64(i) * 86400000))
			case *array.TimestampBuilder:
				fb.Append(arrow.Timestamp(int64(i) * 1000003))
			case *array.Decimal128Builder:
				fb.Append(decimal128.FromI64(int64(i) * 1001))
			default:
				t.Fatalf("no value for %T", fb)
			}
		}
	}
	return b.NewRecordBatch()
}

// arrowStream encodes recs with arrow-go's IPC writer.
func arrowStream(t testing.TB, recs ...arrow.RecordBatch) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(recs[0].Schema()))
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arrowRead decodes a stream with arrow-go's IPC reader.
func arrowRead(t testing.TB, b []byte) []arrow.RecordBatch {
	t.Helper()
	r, err := ipc.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("arrow-go cannot read the lean codec's stream: %v", err)
	}
	defer r.Release()
	var recs []arrow.RecordBatch
	for r.Next() {
		rec := r.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("arrow-go cannot read the lean codec's stream: %v", err)
	}
	return recs
}

// TestLeanCodec: the lean reader decodes what arrow-go's writer wrote
// (every type of the codec, nulls, empty and multi-batch streams) to
// equal batches, and arrow-go's reader decodes what the lean writer
// wrote to equal batches.
func TestLeanCodec(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 2048} {
		a, b := everyType(t, n), everyType(t, n+3)
		in := arrowStream(t, a, b)
		s, recs, err := decodeStream(in)
		if err != nil {
			t.Fatalf("%d rows: %v", n, err)
		}
		if !s.Equal(a.Schema()) || len(recs) != 2 || !array.RecordEqual(recs[0], a) || !array.RecordEqual(recs[1], b) {
			t.Fatalf("%d rows: the lean reader's batches differ from arrow-go's", n)
		}
		var e encoder
		out, err := e.encodeStream([]byte("x"), s, recs)
		if err != nil {
			t.Fatalf("%d rows: encode: %v", n, err)
		}
		if out[0] != 'x' {
			t.Fatal("encodeStream does not append")
		}
		back := arrowRead(t, out[1:])
		if len(back) != 2 || !back[0].Schema().Equal(s) || !array.RecordEqual(back[0], a) || !array.RecordEqual(back[1], b) {
			t.Fatalf("%d rows: arrow-go reads other batches than the lean writer wrote", n)
		}
		// A second encoding with the same encoder gives the same bytes.
		again, err := e.encodeStream(nil, s, recs)
		if err != nil || !bytes.Equal(again, out[1:]) {
			t.Fatalf("%d rows: a second encoding differs (%v)", n, err)
		}
	}
}

// TestLeanFallback: what the lean codec does not cover (a list column, a
// dictionary, field metadata, a sliced array) goes through arrow-go's
// reader or writer and gives the same result through Run.
func TestLeanFallback(t *testing.T) {
	mem := memory.NewGoAllocator()
	lb := array.NewListBuilder(mem, arrow.PrimitiveTypes.Int64)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	list := lb.NewArray()
	listRec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "l", Type: list.DataType()}}, nil), []arrow.Array{list}, 1)
	if _, _, err := decodeStream(arrowStream(t, listRec)); !errors.Is(err, errUnsupported) {
		t.Fatalf("a list column: %v, want errUnsupported", err)
	}
	meta := arrow.NewMetadata([]string{"k"}, []string{"v"})
	ib := array.NewInt64Builder(mem)
	ib.AppendValues([]int64{1, 2, 3}, nil)
	ints := ib.NewArray()
	metaRec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64, Metadata: meta}}, nil), []arrow.Array{ints}, 3)
	if _, _, err := decodeStream(arrowStream(t, metaRec)); !errors.Is(err, errUnsupported) {
		t.Fatalf("field metadata: %v, want errUnsupported", err)
	}
	var e encoder
	sliced := array.NewSlice(ints, 1, 3)
	slicedRec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}}, nil), []arrow.Array{sliced}, 2)
	if _, err := e.encodeStream(nil, slicedRec.Schema(), []arrow.RecordBatch{slicedRec}); !errors.Is(err, errUnsupported) {
		t.Fatalf("a sliced array: %v, want errUnsupported", err)
	}
	Handle(func(in arrow.RecordBatch, _ json.RawMessage) ([]arrow.RecordBatch, error) {
		in.Retain()
		return []arrow.RecordBatch{in}, nil
	})
	for name, rec := range map[string]arrow.RecordBatch{"list": listRec, "metadata": metaRec} {
		out, err := Run(arrowStream(t, rec), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back := arrowRead(t, out); len(back) != 1 || !array.RecordEqual(back[0], rec) || !back[0].Schema().Equal(rec.Schema()) {
			t.Fatalf("%s: Run's output differs from its input", name)
		}
	}
	Handle(func(in arrow.RecordBatch, _ json.RawMessage) ([]arrow.RecordBatch, error) {
		return []arrow.RecordBatch{array.NewRecordBatch(slicedRec.Schema(), []arrow.Array{array.NewSlice(in.Column(0), 1, 3)}, 2)}, nil
	})
	out, err := Run(arrowStream(t, array.NewRecordBatch(slicedRec.Schema(), []arrow.Array{ints}, 3)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if back := arrowRead(t, out); len(back) != 1 || !array.RecordEqual(back[0], slicedRec) {
		t.Fatal("a sliced output differs")
	}
}

// TestLeanRefuses: a truncated or inconsistent stream is one clear error.
func TestLeanRefuses(t *testing.T) {
	in := arrowStream(t, everyType(t, 100))
	for _, n := range []int{7, 20, len(in) / 2, len(in) - 9} {
		if _, _, err := decodeStream(in[:n]); err == nil || errors.Is(err, errUnsupported) {
			t.Errorf("cut at %d bytes: %v, want an error", n, err)
		}
	}
}

// FuzzDecodeStream: the lean reader of the SDK decodes the host's bytes;
// on any input it must not panic and, when it accepts, every value must
// be readable and the batches must survive the lean writer and
// arrow-go's reader unchanged.
func FuzzDecodeStream(f *testing.F) {
	f.Add(arrowStream(f, everyType(f, 5)))
	f.Add(arrowStream(f, everyType(f, 0), everyType(f, 3)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		s, recs, err := decodeStream(in)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		for _, r := range recs {
			for _, c := range r.Columns() {
				_ = fmt.Sprint(c)
			}
		}
		if len(recs) == 0 {
			return
		}
		var e encoder
		out, err := e.encodeStream(nil, s, recs)
		if errors.Is(err, errUnsupported) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		back := arrowRead(t, out)
		for i := range recs {
			if !array.RecordEqual(back[i], recs[i]) {
				t.Fatalf("batch %d changed through the lean writer and arrow-go's reader", i)
			}
		}
	})
}

// TestSliceHelpers: Valid reads a sliced column's bitmap at its offset;
// StringArray and Float64Array give the columns a builder would.
func TestSliceHelpers(t *testing.T) {
	mem := memory.NewGoAllocator()
	b := array.NewInt64Builder(mem)
	b.AppendValues([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, []bool{true, false, true, true, true, true, true, true, true, false})
	col := b.NewArray()
	if Valid(col.(*array.Int64)) == nil || Valid(array.NewSlice(col, 2, 9)) != nil {
		t.Fatal("Valid: nil only without nulls")
	}
	if v := Valid(array.NewSlice(col, 1, 10)); len(v) != 9 || v[0] || !v[1] || v[8] {
		t.Fatalf("Valid of a slice %v", v)
	}
	valid := []bool{true, false, true, true}
	got := StringArray([]string{"a", "ignored", "", "ccc"}, valid)
	sb := array.NewStringBuilder(mem)
	sb.AppendValues([]string{"a", "", "", "ccc"}, valid)
	if want := sb.NewArray(); !array.Equal(got, want) {
		t.Fatalf("StringArray %v, want %v", got, want)
	}
	if got := StringArray(nil, nil); got.Len() != 0 {
		t.Fatal("StringArray of nothing")
	}
	f := Float64Array([]float64{1.5, 99, 3}, []bool{true, false, true})
	fb := array.NewFloat64Builder(mem)
	fb.AppendValues([]float64{1.5, 0, 3}, []bool{true, false, true})
	if want := fb.NewArray(); !array.Equal(f, want) {
		t.Fatalf("Float64Array %v, want %v", f, want)
	}
}
