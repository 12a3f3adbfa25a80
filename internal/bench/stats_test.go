package bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewStat(t *testing.T) {
	for _, tc := range []struct {
		runs []float64
		want Stat
	}{
		{[]float64{3, 1, 2}, Stat{Median: 2, Min: 1, Max: 3, Spread: 1, Runs: []float64{3, 1, 2}}},
		{[]float64{4, 1, 2, 3}, Stat{Median: 2.5, Min: 1, Max: 4, Spread: 1.2, Runs: []float64{4, 1, 2, 3}}},
		{[]float64{0}, Stat{Runs: []float64{0}}},
	} {
		if diff := cmp.Diff(tc.want, newStat(tc.runs)); diff != "" {
			t.Errorf("newStat(%v) (-want +got):\n%s", tc.runs, diff)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	if got := percentile(ds, 0.5); got != 50*time.Millisecond {
		t.Errorf("p50 = %v, want 50ms", got)
	}
	if got := percentile(ds, 0.99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
}

func TestRoundRobin(t *testing.T) {
	want := [][]int{{0, 3, 6}, {1, 4}, {2, 5}}
	if diff := cmp.Diff(want, roundRobin(7, 3)); diff != "" {
		t.Errorf("roundRobin(7, 3) (-want +got):\n%s", diff)
	}
}

func TestArgs(t *testing.T) {
	if got := modelArg([]string{"--log-level", "warn", "--model", "m1"}); got != "m1" {
		t.Errorf("modelArg = %q, want m1", got)
	}
	if got := modelArg([]string{"--model=m2"}); got != "m2" {
		t.Errorf("modelArg = %q, want m2", got)
	}
	if got := indexOf("s3-42", "s3"); got != 42 {
		t.Errorf("indexOf = %d, want 42", got)
	}
	if got := indexOf("s31-42", "s3"); got != -1 {
		t.Errorf("indexOf of another run = %d, want -1", got)
	}
}
