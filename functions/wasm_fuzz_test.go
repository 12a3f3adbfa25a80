package functions

import (
	"bytes"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// FuzzModuleOutput decodes what a module returns (untrusted bytes): it
// must never panic nor allocate beyond its bound, and a refusal is one
// bounded line; accepted output keeps one schema.
func FuzzModuleOutput(f *testing.F) {
	mem := memory.NewGoAllocator()
	b := array.NewInt64Builder(mem)
	b.AppendValues([]int64{1, 2, 3}, nil)
	s := array.NewStringBuilder(mem)
	s.AppendValues([]string{"a", "", "ccc"}, []bool{true, false, true})
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64}, {Name: "s", Type: arrow.BinaryTypes.String, Nullable: true}}, nil),
		[]arrow.Array{b.NewArray(), s.NewArray()}, 3)
	var buf bytes.Buffer
	if err := encodeBatch(&buf, rec); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:len(buf.Bytes())/2])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		out := &moduleOutput{}
		defer out.release()
		err := out.add(data, &boundedAllocator{mem: memory.NewGoAllocator(), limit: 64 << 20}, 0)
		if err != nil {
			if len(err.Error()) > 2*maxErrorLen || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one bounded line: %q", err)
			}
			return
		}
		for _, r := range out.recs {
			if !r.Schema().Equal(out.schema) {
				t.Fatalf("batch schema %s differs from %s", r.Schema(), out.schema)
			}
		}
	})
}
