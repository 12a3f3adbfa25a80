package functions

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/jackc/pgx/v5/pgtype"
)

// FuzzCopyReader: the binary COPY decoder and the array decoder take any
// bytes from a source, in any split, without panicking or allocating by
// the sizes the bytes claim.
func FuzzCopyReader(f *testing.F) {
	f.Add([]byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x04\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff"), 7)
	f.Add([]byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x14\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x17\x7f\xff\xff\xff\x00\x00\x00\x01"), 3)
	m := pgtype.NewMap()
	ints, _, _ := mapType(m, 1007, -1)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		b := array.NewBuilder(memory.DefaultAllocator, ints.arrow)
		defer b.Release()
		dec := ints.bind(b)
		c := &copyReader{cols: 2, row: func(fields [][]byte) error {
			for _, fd := range fields {
				if fd != nil {
					dec(fd)
				}
			}
			return nil
		}}
		if split <= 0 || split > len(data) {
			split = len(data)
		}
		for len(data) > 0 {
			n := min(split, len(data))
			if _, err := c.Write(data[:n]); err != nil {
				return
			}
			data = data[n:]
		}
	})
}

// FuzzSmallNumeric: the int64 decoder of binary numerics agrees with
// pgtype's and math/big's (toDecimal) on any bytes it takes, value and
// refusal alike, for DECIMAL(12,3) and DECIMAL(38,10).
func FuzzSmallNumeric(f *testing.F) {
	// 12345.678: 2 digits (1, 2345), weight 1, positive, dscale 3, then 6780.
	f.Add([]byte("\x00\x03\x00\x01\x00\x00\x00\x03\x00\x01\x09\x29\x1a\x7c"))
	f.Add([]byte("\x00\x01\xff\xff\x40\x00\x00\x04\x00\x05")) // -0.0005
	f.Add([]byte("\x00\x00\x00\x00\xc0\x00\x00\x00"))         // NaN
	m := pgtype.NewMap()
	plan := m.PlanScan(oidNumeric, pgtype.BinaryFormatCode, new(pgtype.Numeric))
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, ps := range [][2]int32{{12, 3}, {38, 10}} {
			d, ok, err := smallNumeric(src, ps[0], ps[1])
			if !ok && err == nil {
				continue // toDecimal's
			}
			var v pgtype.Numeric
			if serr := plan.Scan(src, &v); serr != nil {
				t.Fatalf("%x: smallNumeric took it (%v, %v), pgtype refuses it: %v", src, d, err, serr)
			}
			want, werr := toDecimal(v, ps[0], ps[1])
			if (err != nil) != (werr != nil) || err == nil && d != want {
				t.Fatalf("%x as DECIMAL(%d,%d): smallNumeric %v, %v; toDecimal %v, %v", src, ps[0], ps[1], d, err, want, werr)
			}
		}
	})
}
