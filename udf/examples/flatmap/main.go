// Command flatmap is an example teatree user function, a flat-map: one row
// in, several out. It splits the string column param column (required)
// at param sep (default ",") and emits one row per part: the input's
// other columns repeated, the part in the column's place and its position
// (from 0) as int32 column ordinal. A null or empty string emits no row.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o flatmap.wasm ./udf/examples/flatmap
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/teatree/teatree/udf/sdk"
)

type params struct {
	Column string `json:"column"`
	Sep    string `json:"sep"`
}

func init() { sdk.Handle(flatMap) }

func main() {}

func flatMap(rec arrow.RecordBatch, raw json.RawMessage) ([]arrow.RecordBatch, error) {
	p := params{Sep: ","}
	if err := sdk.Params(raw, &p); err != nil {
		return nil, err
	}
	if p.Column == "" || p.Sep == "" {
		return nil, errors.New("params.column (the string column to split) and a non-empty params.sep are required")
	}
	a, err := sdk.Column(rec, p.Column)
	if err != nil {
		return nil, err
	}
	s, ok := a.(*array.String)
	if !ok {
		return nil, fmt.Errorf("column %q is %s, not a string", p.Column, a.DataType())
	}
	var idx []int
	parts := array.NewStringBuilder(sdk.Mem)
	defer parts.Release()
	ord := array.NewInt32Builder(sdk.Mem)
	defer ord.Release()
	for i := range s.Len() {
		if s.IsNull(i) || s.Value(i) == "" {
			continue
		}
		for k, part := range strings.Split(s.Value(i), p.Sep) {
			idx = append(idx, i)
			parts.Append(part)
			ord.Append(int32(k))
		}
	}
	rows, err := sdk.Take(rec, idx)
	if err != nil {
		return nil, err
	}
	defer rows.Release()
	pc, oc := parts.NewArray(), ord.NewArray()
	defer pc.Release()
	defer oc.Release()
	col := rec.Schema().FieldIndices(p.Column)[0]
	fields := rows.Schema().Fields()
	cols := rows.Columns()
	fields[col] = arrow.Field{Name: p.Column, Type: arrow.BinaryTypes.String, Nullable: true}
	cols = append(cols[:col:col], append([]arrow.Array{pc}, cols[col+1:]...)...)
	fields = append(fields, arrow.Field{Name: "ordinal", Type: arrow.PrimitiveTypes.Int32})
	cols = append(cols, oc)
	return []arrow.RecordBatch{array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(len(idx)))}, nil
}
