package bench

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeBin returns a directory holding an empty teactl and an empty
// delayclass.wasm, which is all validate checks.
func fakeBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"teactl", WasmModule} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestParseScenarios(t *testing.T) {
	bin := fakeBin(t)
	for _, tc := range []struct {
		args      []string
		want      []string
		largeRows int
	}{
		{nil, []string{"1", "2", "2P", "2G", "3", "3D", "4", "5", "6"}, 32000000},
		{[]string{"-scenarios", "6"}, []string{"6"}, 32000000},
		{[]string{"-scenarios", "3L"}, []string{"3L"}, 32000000},
		{[]string{"-scenarios", "3l, 3", "-large-rows", "2000000"}, []string{"3L", "3"}, 2000000},
		{[]string{"-scenarios", "3L", "-quick"}, []string{"3L"}, 2000000},
		{[]string{"-scenarios", "2a,2p,2g"}, []string{"2A", "2P", "2G"}, 32000000},
	} {
		c, err := parse(append([]string{"-bin", bin, "-flights", bin + "/teactl"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("parse(%q): %v", tc.args, err)
		}
		if diff := cmp.Diff(tc.want, c.Scenarios); diff != "" {
			t.Errorf("parse(%q) scenarios (-want +got):\n%s", tc.args, diff)
		}
		if c.LargeRows != tc.largeRows {
			t.Errorf("parse(%q) large rows = %d, want %d", tc.args, c.LargeRows, tc.largeRows)
		}
	}
	for _, bad := range [][]string{
		{"-scenarios", "6"},
		{"-scenarios", "3L", "-large-rows", "50"},
		{"-scenarios", "3L", "-large-updates", "101"},
		{"-scenarios", "3L", "-bin", t.TempDir()}, // no teactl to pull with
	} {
		if _, err := parse(append([]string{"-bin", bin}, bad...), io.Discard); err == nil {
			t.Errorf("parse(%q) = nil error, want one", bad)
		}
	}
}

// TestUpdateSlices checks that the 1 % updates of scenario 3L touch
// disjoint id ranges that together cover the table.
func TestUpdateSlices(t *testing.T) {
	for _, rows := range []int{100, 2000000, 32000001} {
		next := 0
		for r := range 100 {
			lo, hi := updateSlice(rows, r)
			if lo != next || hi <= lo {
				t.Fatalf("rows %d: slice %d is [%d, %d), want it to start at %d and be non-empty", rows, r, lo, hi, next)
			}
			if n := hi - lo; n < rows/100 || n > rows/100+1 {
				t.Errorf("rows %d: slice %d holds %d rows, not 1 %%", rows, r, n)
			}
			next = hi
		}
		if next != rows {
			t.Errorf("rows %d: the slices end at %d", rows, next)
		}
	}
}
