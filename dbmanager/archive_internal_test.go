package dbmanager

import (
	"testing"

	"github.com/teatree/teatree/snapshot"
)

// TestSettled: the files an append need not count are those before the
// first whose range has a free rowid (a deleted row a vacuum may remove,
// moving the rows above it down); an append-only table has none, so its
// append counts no file (its cut reads only the new rows).
func TestSettled(t *testing.T) {
	files := func(next int64, ranges ...[2]int64) cutTable { // (first rowid, rows)
		b := cutTable{NextRowID: next}
		for _, r := range ranges {
			b.Data = append(b.Data, dataFile{FirstRowID: r[0], DataFile: snapshot.DataFile{Rows: r[1]}})
		}
		return b
	}
	for _, c := range []struct {
		name string
		b    cutTable
		want int
	}{
		{"append-only", files(300, [2]int64{0, 100}, [2]int64{100, 150}, [2]int64{250, 50}), 3},
		{"a deleted row in the middle file", files(300, [2]int64{0, 100}, [2]int64{100, 149}, [2]int64{250, 50}), 1},
		{"a deleted row in the last file", files(300, [2]int64{0, 100}, [2]int64{100, 150}, [2]int64{250, 49}), 2},
		{"rows deleted at the start", files(300, [2]int64{0, 90}, [2]int64{100, 150}, [2]int64{250, 50}), 0},
		{"no files", files(0), 0},
	} {
		if got := settled(c.b); got != c.want {
			t.Errorf("%s: settled = %d, want %d", c.name, got, c.want)
		}
	}
}
