package sdk

import (
	"encoding/json"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Params decodes params into v, a pointer to a struct with json tags;
// unknown fields are errors.
func Params(params json.RawMessage, v any) error {
	if err := json.Unmarshal(params, v); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	return nil
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
func Float64s(a arrow.Array) ([]float64, error) {
	v := make([]float64, a.Len())
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
