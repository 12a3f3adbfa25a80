package functions

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/teatree/teatree/duck"
)

// BenchmarkWasmMap is issue 18's benchmark: the great-circle distance of
// every row of a flights-sized table (TEATREE_BENCH_ROWS, default 3 M rows
// of id, lat1, lon1, lat2, lon2) written to a new table, three ways: in
// SQL (CREATE TABLE AS with the haversine expression), in native Go over
// the Arrow batches of duck.QueryArrow (then DuckDB's Arrow scan, as the
// wasm function writes), and through the wasm function with the example
// module greatcircle; plus wasm-1row, one request over a 1-row input (the
// per-call overhead: instantiate, one batch, write). Run it alone:
//
//	go test -tags=duckdb_arrow -run '^$' -bench BenchmarkWasmMap -benchtime 1x ./functions
func BenchmarkWasmMap(b *testing.B) {
	rows := 3_000_000
	if s := os.Getenv("TEATREE_BENCH_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	m, w := wasmBenchModel(b)
	ctx := context.Background()
	m.exec(fmt.Sprintf(`CREATE TABLE legs AS SELECT range AS id, ((range %% 180) - 90)::DOUBLE AS lat1, ((range %% 360) - 180)::DOUBLE AS lon1,
		(((range * 7) %% 180) - 90)::DOUBLE AS lat2, (((range * 13) %% 360) - 180)::DOUBLE AS lon2 FROM range(%d)`, rows))
	reg := "staging/m/r-gc/greatcircle.wasm"
	m.put(reg, w.files["greatcircle"])
	if _, err := m.apply("register_module", `{"name":"gc","payload":{"uri":"`+reg+`"}}`); err != nil {
		b.Fatal(err)
	}
	perSec := func(b *testing.B, n int) {
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	}
	b.Run("sql", func(b *testing.B) {
		for range b.N {
			m.exec(`CREATE OR REPLACE TABLE d_sql AS SELECT *, 2 * 6371.0088 * asin(sqrt(pow(sin(radians(lat2 - lat1) / 2), 2) + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lon2 - lon1) / 2), 2))) AS distance_km FROM legs ORDER BY id`)
		}
		perSec(b, rows)
	})
	b.Run("native", func(b *testing.B) {
		for range b.N {
			var recs []arrow.RecordBatch
			err := duck.QueryArrow(ctx, m.conn, "SELECT * FROM legs ORDER BY id", func(rr array.RecordReader) error {
				for rr.Next() {
					recs = append(recs, nativeDistance(rr.RecordBatch()))
				}
				return rr.Err()
			})
			if err != nil {
				b.Fatal(err)
			}
			rr, _ := array.NewRecordReader(recs[0].Schema(), recs)
			release, err := duck.RegisterArrow(m.conn, rr, "native_out")
			if err != nil {
				b.Fatal(err)
			}
			m.exec(`CREATE OR REPLACE TABLE d_native AS SELECT * FROM native_out`)
			release()
			rr.Release()
			for _, r := range recs {
				r.Release()
			}
		}
		perSec(b, rows)
	})
	b.Run("wasm", func(b *testing.B) {
		var copied, batches int64
		for range b.N {
			env := m.env()
			digest, err := moduleDigest(ctx, m.conn, "gc")
			if err != nil {
				b.Fatal(err)
			}
			out, err := runModule(ctx, env, "gc", digest, w.files["greatcircle"], "SELECT * FROM legs ORDER BY id", []byte("{}"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := writeOutput(ctx, env, &wasmArgs{Module: "gc", Table: "d_wasm", Mode: wasmReplace}, out); err != nil {
				b.Fatal(err)
			}
			copied, batches = copied+out.copied, batches+int64(out.batches)
			out.release()
		}
		perSec(b, rows)
		b.ReportMetric(float64(copied)/float64(batches), "bytes-copied/batch")
		b.ReportMetric(float64(batches)/float64(b.N), "batches")
	})
	b.Run("wasm-1row", func(b *testing.B) {
		for range b.N {
			if _, err := m.apply("wasm", `{"module":"gc","input":"SELECT * FROM legs WHERE id = 1","table":"d_one","mode":"replace"}`); err != nil {
				b.Fatal(err)
			}
		}
	})
	if got := m.rows(`SELECT count(*) FROM d_wasm w JOIN d_sql s USING (id) WHERE abs(w.distance_km - s.distance_km) > 1e-6`); got[0] != "0" {
		b.Errorf("wasm and SQL distances differ in %s rows", got[0])
	}
}

// wasmBenchModel is wasmModel for a benchmark.
func wasmBenchModel(b *testing.B) (*testModel, *wasmModules) {
	b.Helper()
	if !duck.ArrowAvailable {
		b.Skip("needs the duckdb_arrow build tag")
	}
	w, err := wasmFixture()
	if err != nil {
		b.Skipf("the Go toolchain cannot build wasip1 modules here: %v", err)
	}
	m := newModel(b)
	m.wasm, m.modules = w.host, &memModules{}
	return m, w
}

// nativeDistance is the greatcircle module's computation in native Go.
func nativeDistance(rec arrow.RecordBatch) arrow.RecordBatch {
	col := func(i int) []float64 { return rec.Column(i).(*array.Float64).Float64Values() }
	lat1, lon1, lat2, lon2 := col(1), col(2), col(3), col(4)
	bld := array.NewFloat64Builder(memory.DefaultAllocator)
	defer bld.Release()
	bld.Reserve(int(rec.NumRows()))
	const rad = math.Pi / 180
	for i := range lat1 {
		dLat, dLon := (lat2[i]-lat1[i])*rad, (lon2[i]-lon1[i])*rad
		a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1[i]*rad)*math.Cos(lat2[i]*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
		bld.UnsafeAppend(2 * 6371.0088 * math.Asin(math.Sqrt(a)))
	}
	d := bld.NewArray()
	defer d.Release()
	fields := append(append([]arrow.Field{}, rec.Schema().Fields()...), arrow.Field{Name: "distance_km", Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	cols := append(append([]arrow.Array{}, rec.Columns()...), d)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}
