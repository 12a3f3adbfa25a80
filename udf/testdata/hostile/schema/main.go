// Command schema is a hostile module: its output's schema changes from
// one batch to the next (a bigint column x, then a string column x).
package main

import (
	"encoding/json"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/teatree/teatree/udf/sdk"
)

var calls int

func init() {
	sdk.Handle(func(in arrow.RecordBatch, _ json.RawMessage) ([]arrow.RecordBatch, error) {
		calls++
		var col arrow.Array
		var typ arrow.DataType
		if calls%2 == 1 {
			b := array.NewInt64Builder(sdk.Mem)
			b.Append(1)
			col, typ = b.NewArray(), arrow.PrimitiveTypes.Int64
		} else {
			b := array.NewStringBuilder(sdk.Mem)
			b.Append("one")
			col, typ = b.NewArray(), arrow.BinaryTypes.String
		}
		s := arrow.NewSchema([]arrow.Field{{Name: "x", Type: typ}}, nil)
		return []arrow.RecordBatch{array.NewRecordBatch(s, []arrow.Array{col}, 1)}, nil
	})
}

func main() {}
