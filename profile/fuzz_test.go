package profile

import (
	"strconv"
	"testing"
)

// FuzzDecode: Decode reads objects from the store; whatever the bytes it
// returns an error or a profile that encodes, decodes again and merges
// with itself, never panics.
func FuzzDecode(f *testing.F) {
	// Seeds: profiles as Build makes them, without DuckDB (workers start fast).
	for _, rows := range []int64{0, 3, 50} {
		p := &Profile{Rows: rows}
		i, s, l := newColumn("i", "BIGINT"), newColumn("s", "VARCHAR"), newColumn("l", "BIGINT[]")
		l.Nulls = rows
		for n := range rows {
			h := uint64(n+1) * 0x9e3779b97f4a7c15
			i.distinct.InsertHash(h)
			for d := range Depth {
				i.cms.cells[d*Width+cell(h, d)]++
			}
		}
		if rows > 0 {
			i.Min, i.Max = &Bound{Text: "0"}, &Bound{Text: strconv.FormatInt(rows-1, 10)}
			s.Min, s.Max = &Bound{Text: "a"}, &Bound{Text: "b"}
			s.Top = []Value{{Text: "a", Hash: 7, Low: rows - 1, High: rows - 1}, {Text: "b", Hash: 9, Low: 1, High: 1}}
			s.distinct.InsertHash(7)
			s.distinct.InsertHash(9)
		}
		p.Columns = []*Column{i, s, l}
		data, err := p.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"format":"teatree-profile","version":1,"hll_precision":14,"cms_width":1024,"cms_depth":4,"rows":1,"columns":[{"name":"x","type":"INTEGER","nulls":0,"hll":"AQ==","cms":"AA=="}]}`))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			return
		}
		again, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded profile does not encode: %v", err)
		}
		q, err := Decode(again)
		if err != nil {
			t.Fatalf("an encoded profile does not decode: %v", err)
		}
		m, err := Merge(p, q)
		if err != nil {
			t.Fatalf("a profile does not merge with itself: %v", err)
		}
		for _, c := range m.Columns {
			c.Distinct()
			c.TopValues()
		}
	})
}
