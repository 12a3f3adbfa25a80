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
