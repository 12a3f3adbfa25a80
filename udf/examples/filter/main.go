// Command filter is an example teatree user function, a filter: it keeps
// the rows whose numeric column (param column, required) is at least min
// and at most max (params, optional: an absent bound does not bound).
// Nulls are dropped.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm ./udf/examples/filter
package main

import (
	"encoding/json"
	"errors"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/teatree/teatree/udf/sdk"
)

type params struct {
	Column string   `json:"column"`
	Min    *float64 `json:"min"`
	Max    *float64 `json:"max"`
}

func init() { sdk.Handle(filter) }

func main() {}

func filter(rec arrow.RecordBatch, raw json.RawMessage) ([]arrow.RecordBatch, error) {
	var p params
	if err := sdk.Params(raw, &p); err != nil {
		return nil, err
	}
	if p.Column == "" {
		return nil, errors.New("params.column is required: the column to filter on")
	}
	a, err := sdk.Column(rec, p.Column)
	if err != nil {
		return nil, err
	}
	v, err := sdk.Float64s(a)
	if err != nil {
		return nil, err
	}
	var keep []int
	for i, x := range v {
		if a.IsValid(i) && (p.Min == nil || x >= *p.Min) && (p.Max == nil || x <= *p.Max) {
			keep = append(keep, i)
		}
	}
	out, err := sdk.Take(rec, keep)
	if err != nil {
		return nil, err
	}
	return []arrow.RecordBatch{out}, nil
}
