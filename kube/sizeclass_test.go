package kube

import (
	"strings"
	"testing"
)

func TestParseSizeClass(t *testing.T) {
	for _, tc := range []struct {
		in      string
		cpu     int64
		memory  string
		threads int64
	}{
		{"small", 2, "2Gi", 2},
		{"medium", 4, "4Gi", 4},
		{" Large ", 8, "16Gi", 8},
		{"xlarge", 16, "64Gi", 16},
	} {
		c, err := ParseSizeClass(tc.in)
		if err != nil {
			t.Fatalf("ParseSizeClass(%q): %v", tc.in, err)
		}
		if mem := c.MemoryQuantity(); c.CPU != tc.cpu || mem.String() != tc.memory || c.DuckDBThreads() != tc.threads {
			t.Errorf("%q: cpu %d memory %s threads %d, want %d %s %d", tc.in, c.CPU, mem.String(), c.DuckDBThreads(), tc.cpu, tc.memory, tc.threads)
		}
	}
	_, err := ParseSizeClass("huge")
	if err == nil || !strings.Contains(err.Error(), "small, medium, large, xlarge") {
		t.Errorf("ParseSizeClass(huge) = %v, want an error listing the classes", err)
	}
}

func TestSizeClassDerived(t *testing.T) {
	var prev SizeClass
	for _, c := range SizeClasses {
		pct := float64(c.DuckDBMemoryLimitMiB()) / float64(c.MemoryMiB)
		if pct < 0.60 || pct > 0.75 {
			t.Errorf("%s: memory_limit %s is %.0f%% of the pod's memory, want 60-75%%", c, c.DuckDBMemoryLimit(), 100*pct)
		}
		if prev.Name != "" && (c.TerminationGrace <= prev.TerminationGrace || c.StartupBudget <= prev.StartupBudget) {
			t.Errorf("%s: grace %v / startup %v do not grow over %s", c, c.TerminationGrace, c.StartupBudget, prev)
		}
		prev = c
	}
	if got := Small.DuckDBMemoryLimit(); got != "1280MiB" {
		t.Errorf("small memory_limit = %s, want 1280MiB", got)
	}
}
