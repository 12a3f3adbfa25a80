package sdk

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Params decodes params into v, a pointer to a struct with json tags
// (fields absent from params keep the values v holds). Every batch of a
// request has the same params: under Run (a module's one thread, see
// scratch.go), when v's type holds only plain values
// (booleans, numbers, strings, arrays and structs of them) and the params
// and v's values before the call are the last call's, v gets the last
// call's result without decoding again (json's reflection is costly under
// Go's wasm backend).
func Params(params json.RawMessage, v any) error {
	rv := reflect.ValueOf(v)
	cache := scratch.active && rv.Kind() == reflect.Pointer && !rv.IsNil() && plain(rv.Type().Elem())
	var before any
	if cache {
		before = rv.Elem().Interface()
		if c := &lastParams; c.typ == rv.Type() && c.raw == string(params) && c.before == before {
			rv.Elem().Set(reflect.ValueOf(c.after))
			return nil
		}
	}
	if err := json.Unmarshal(params, v); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	if cache {
		lastParams.typ, lastParams.raw, lastParams.before, lastParams.after = rv.Type(), string(params), before, rv.Elem().Interface()
	}
	return nil
}

// lastParams is the last decode of Params whose type is plain.
var lastParams struct {
	typ           reflect.Type
	raw           string
	before, after any
}

// plain says whether t holds only values that json decodes into place
// and == compares (no pointers, slices, maps or interfaces), so that a
// copy of a decoded value is the decode.
func plain(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	case reflect.Array:
		return plain(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !plain(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// Column returns the column called name of rec, or an error naming the
// columns it has.
func Column(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("the input has no column %q (it has %v)", name, rec.Schema().Fields())
	}
	return rec.Column(idx[0]), nil
}

// Float64s returns column a as float64 values (float32, float64,
// decimal128 and the integer types convert); a null's value is
// undefined (check a.IsValid).
//
// Under Run the values live until the call ends (see Strings).
func Float64s(a arrow.Array) ([]float64, error) {
	v := scratch.f64.get(a.Len())
	switch a := a.(type) {
	case *array.Float64:
		copy(v, a.Float64Values())
	case *array.Float32:
		for i, x := range a.Float32Values() {
			v[i] = float64(x)
		}
	case *array.Int64:
		for i, x := range a.Int64Values() {
			v[i] = float64(x)
		}
	case *array.Int32:
		for i, x := range a.Int32Values() {
			v[i] = float64(x)
		}
	case *array.Int16:
		for i, x := range a.Int16Values() {
			v[i] = float64(x)
		}
	case *array.Decimal128:
		scale := a.DataType().(*arrow.Decimal128Type).Scale
		for i := range v {
			v[i] = a.Value(i).ToFloat64(scale)
		}
	default:
		return nil, fmt.Errorf("a column of type %s is not numeric", a.DataType())
	}
	return v, nil
}

// Take returns the rows of rec at the indices idx (in that order, a row
// as often as it is listed), as one batch of rec's schema.
func Take(rec arrow.RecordBatch, idx []int) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for c := range cols {
		// Runs of consecutive indices become one slice each.
		var parts []arrow.Array
		for i := 0; i < len(idx); {
			j := i + 1
			for j < len(idx) && idx[j] == idx[j-1]+1 {
				j++
			}
			parts = append(parts, array.NewSlice(rec.Column(c), int64(idx[i]), int64(idx[j-1]+1)))
			i = j
		}
		if len(parts) == 0 {
			parts = append(parts, array.NewSlice(rec.Column(c), 0, 0))
		}
		col, err := array.Concatenate(parts, Mem)
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			return nil, err
		}
		cols[c] = col
	}
	return array.NewRecordBatch(rec.Schema(), cols, int64(len(idx))), nil
}

// With returns rec with the column col appended as field f.
func With(rec arrow.RecordBatch, f arrow.Field, col arrow.Array) arrow.RecordBatch {
	fields := append(append([]arrow.Field{}, rec.Schema().Fields()...), f)
	cols := append(append([]arrow.Array{}, rec.Columns()...), col)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}

// Valid returns whether each row of a holds a value (is not null); nil
// when a has no nulls. With StringArray and Float64Array it lets a
// handler work on plain slices: under Go's wasm backend every function
// call costs, so a loop over slices is many times faster than a builder's
// Append per row. Under Run the flags live until the call ends (see
// Strings).
func Valid(a arrow.Array) []bool {
	if a.NullN() == 0 {
		return nil
	}
	v := scratch.bools.get(a.Len())
	bits, off := a.NullBitmapBytes(), a.Data().Offset()
	for i := range v {
		j := off + i
		v[i] = bits[j>>3]&(1<<(j&7)) != 0
	}
	return v
}

// bitmap returns the validity bitmap of valid (nil: no nulls) and the
// null count.
func bitmap(valid []bool) (*memory.Buffer, int) {
	if valid == nil {
		return nil, 0
	}
	b, nulls := scratch.bytes.get((len(valid)+63)/64*8), 0
	clear(b)
	for i, ok := range valid {
		if ok {
			b[i>>3] |= 1 << (i & 7)
		} else {
			nulls++
		}
	}
	return memory.NewBufferBytes(b), nulls
}

// StringArray returns a string column of vals, null where valid is false
// (valid nil: no nulls; else as long as vals), built in one pass (vals
// from Strings costs no allocation in a module). Under Run its buffers
// live until the call ends (see Strings).
func StringArray(vals []string, valid []bool) arrow.Array {
	if valid != nil && len(valid) != len(vals) {
		panic(fmt.Sprintf("sdk.StringArray: %d values and %d validity flags", len(vals), len(valid)))
	}
	offs := scratch.i32.get(len(vals) + 1)
	offs[0] = 0
	total := 0
	for i, s := range vals {
		if valid == nil || valid[i] {
			total += len(s)
		}
		if total > math.MaxInt32 {
			panic("sdk.StringArray: more than 2 GiB of strings")
		}
		offs[i+1] = int32(total)
	}
	data := scratch.bytes.get(total)[:0]
	for i, s := range vals {
		if valid == nil || valid[i] {
			data = append(data, s...)
		}
	}
	vb, nulls := bitmap(valid)
	d := array.NewData(arrow.BinaryTypes.String, len(vals), []*memory.Buffer{vb, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs)), memory.NewBufferBytes(data)}, nil, nulls, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// Float64Array returns a float64 column of vals, null where valid is
// false (valid nil: no nulls; else as long as vals). Under Run its
// validity bitmap lives until the call ends (see Strings).
func Float64Array(vals []float64, valid []bool) arrow.Array {
	if valid != nil && len(valid) != len(vals) {
		panic(fmt.Sprintf("sdk.Float64Array: %d values and %d validity flags", len(vals), len(valid)))
	}
	vb, nulls := bitmap(valid)
	d := array.NewData(arrow.PrimitiveTypes.Float64, len(vals), []*memory.Buffer{vb, memory.NewBufferBytes(arrow.Float64Traits.CastToBytes(vals))}, nil, nulls, 0)
	defer d.Release()
	return array.MakeFromData(d)
}
