package class

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestMap: every class boundary and a null, natively (the module runs the
// same function under the SDK).
func TestMap(t *testing.T) {
	b := array.NewInt16Builder(memory.DefaultAllocator)
	b.AppendValues([]int16{-1, 0, 15, 16, 60, 61}, nil)
	b.AppendNull()
	col := b.NewArray()
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "delay", Type: arrow.PrimitiveTypes.Int16, Nullable: true}}, nil), []arrow.Array{col}, 7)
	out, err := Map(rec, json.RawMessage("{}"))
	if err != nil {
		t.Fatal(err)
	}
	got := out[0].Column(1).(*array.String)
	var s []string
	for i := range got.Len() {
		if got.IsNull(i) {
			s = append(s, "null")
			continue
		}
		s = append(s, got.Value(i))
	}
	if want := "early on_time on_time late late very_late null"; strings.Join(s, " ") != want {
		t.Errorf("classes %v, want %s", s, want)
	}
	if out[0].Schema().Field(1).Name != "delay_class" {
		t.Errorf("column %s, want delay_class", out[0].Schema().Field(1).Name)
	}
	if _, err := Map(rec, json.RawMessage(`{"column":"nope"}`)); err == nil || !strings.Contains(err.Error(), `no column "nope"`) {
		t.Errorf("missing column: %v", err)
	}
}
