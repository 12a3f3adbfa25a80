package udf_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/examples/delayclass/class"
	"github.com/teatree/teatree/udf/sdk"
)

// flightsBatch is one input batch of teabench scenario 6: 2048 rows of
// int16 delay (every 50th null) and int16 distance, as an Arrow IPC
// stream.
func flightsBatch(tb testing.TB) []byte { return flightsRows(tb, 2048) }

// flightsRows is flightsBatch with n rows in the one batch.
func flightsRows(tb testing.TB, n int) []byte {
	tb.Helper()
	mem := memory.NewGoAllocator()
	d, s := array.NewInt16Builder(mem), array.NewInt16Builder(mem)
	for i := range n {
		if i%50 == 0 {
			d.AppendNull()
		} else {
			d.Append(int16(i%200 - 30))
		}
		s.Append(int16(i % 3000))
	}
	schema := arrow.NewSchema([]arrow.Field{{Name: "delay", Type: arrow.PrimitiveTypes.Int16, Nullable: true}, {Name: "distance", Type: arrow.PrimitiveTypes.Int16, Nullable: true}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{d.NewArray(), s.NewArray()}, int64(n))
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	w.Close()
	return buf.Bytes()
}

// BenchmarkProcess is one batch of scenario 6 through the delayclass
// module (wasm: one instance in its sandbox process for every batch, as a
// request does) and through the SDK's Run natively (the same handler): the
// module's cost per batch without DuckDB around it.
//
//	go test -run '^$' -bench BenchmarkProcess -cpuprofile cpu.out ./udf
func BenchmarkProcess(b *testing.B) {
	in := flightsBatch(b)
	b.Run("wasm", func(b *testing.B) { processEach(b, host, in, 2048) })
	b.Run("native", func(b *testing.B) {
		sdk.Handle(class.Map)
		for range b.N {
			if _, err := sdk.Run(in, []byte("{}")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(2048*b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkProcessRows is BenchmarkProcess's wasm case with batches of
// more rows than DuckDB's 2048 per call: what a call costs beyond its
// rows.
func BenchmarkProcessRows(b *testing.B) {
	for _, n := range []int{1, 2048, 8192, 32768} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { processEach(b, host, flightsRows(b, n), n) })
	}
}

// processEach calls one instance of the delayclass module of h b.N times
// over in (an IPC stream of one batch of rows rows) and reports the rows
// per second.
func processEach(b *testing.B, h *udf.Host, in []byte, rows int) {
	ctx := context.Background()
	inst, err := h.Instantiate(ctx, udf.Digest(modules["delayclass"]), modules["delayclass"], udf.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close(ctx)
	b.ResetTimer()
	for range b.N {
		if _, err := inst.Process(ctx, in, []byte("{}")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkInstantiate is the fixed cost of a request's instance of the
// delayclass module (compiled already): instantiation, _initialize (Go's
// runtime and the packages' initialisation), the version check and one
// call over a 1-row input; most of teabench's 6r.
func BenchmarkInstantiate(b *testing.B) {
	in := flightsRows(b, 1)
	ctx := context.Background()
	for range b.N {
		inst, err := host.Instantiate(ctx, udf.Digest(modules["delayclass"]), modules["delayclass"], udf.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := inst.Process(ctx, in, []byte("{}")); err != nil {
			b.Fatal(err)
		}
		inst.Close(ctx)
	}
}
