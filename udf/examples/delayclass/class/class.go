// Package class is the computation of the delayclass example module, a
// package of its own so that the benchmark runs the very same code
// natively over the same Arrow batches (teabench scenario 6).
package class

import (
	"encoding/json"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/teatree/teatree/udf/sdk"
)

// Of is the class of a delay in minutes: early (< 0), on_time (0 to 15),
// late (more than 15, up to 60), very_late (more than 60).
func Of(delay float64) string {
	switch {
	case delay < 0:
		return "early"
	case delay <= 15:
		return "on_time"
	case delay <= 60:
		return "late"
	default:
		return "very_late"
	}
}

// SQL is Of as a DuckDB expression over the column delay.
const SQL = "CASE WHEN delay < 0 THEN 'early' WHEN delay <= 15 THEN 'on_time' WHEN delay <= 60 THEN 'late' WHEN delay > 60 THEN 'very_late' END"

type params struct {
	Column string `json:"column"`
	As     string `json:"as"`
}

// Map returns rec with a string column (param as, default delay_class)
// holding the class of its delay column (param column, default delay);
// null where the delay is null.
func Map(rec arrow.RecordBatch, raw json.RawMessage) ([]arrow.RecordBatch, error) {
	p := params{Column: "delay", As: "delay_class"}
	if err := sdk.Params(raw, &p); err != nil {
		return nil, err
	}
	a, err := sdk.Column(rec, p.Column)
	if err != nil {
		return nil, err
	}
	v, err := sdk.Float64s(a)
	if err != nil {
		return nil, err
	}
	// Plain slices, no builder: under Go's wasm backend a builder's
	// Append per row costs ten times the rest of the batch; in the
	// module, sdk.Strings is the last batch's slice.
	classes := sdk.Strings(len(v))
	for i, x := range v {
		classes[i] = Of(x)
	}
	col := sdk.StringArray(classes, sdk.Valid(a))
	defer col.Release()
	return []arrow.RecordBatch{sdk.With(rec, arrow.Field{Name: p.As, Type: arrow.BinaryTypes.String, Nullable: true}, col)}, nil
}
