package kube

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// A SizeClass is the compute size of a model's db-manager pod on Kubernetes:
// the per-model setting goal_model.size_class. Requests equal limits (the
// pod is in the Guaranteed QoS class, so it is the last to be evicted and,
// with the static CPU manager, gets whole cores), and DuckDB's threads and
// memory_limit are derived from them.
type SizeClass struct {
	Name string
	// CPU is the number of vCPUs requested and allowed.
	CPU int64
	// MemoryMiB is the pod's memory request and limit in MiB.
	MemoryMiB int64
	// TerminationGrace is the pod's terminationGracePeriodSeconds: time to
	// drain the consumer, finish the open transaction, CHECKPOINT the WAL
	// into the database file and release the writer lease. A bigger model
	// has bigger transactions and a bigger WAL to checkpoint.
	TerminationGrace time.Duration
	// StartupBudget is how long the startup probe lets a starting db-manager
	// take (WAL replay after a crash, a rebuild from the latest snapshot)
	// before the kubelet restarts it.
	StartupBudget time.Duration
}

// The size classes, from the original design. Use ParseSizeClass to look
// one up by name.
var (
	Small  = SizeClass{Name: "small", CPU: 2, MemoryMiB: 2 << 10, TerminationGrace: time.Minute, StartupBudget: 10 * time.Minute}
	Medium = SizeClass{Name: "medium", CPU: 4, MemoryMiB: 4 << 10, TerminationGrace: 2 * time.Minute, StartupBudget: 20 * time.Minute}
	Large  = SizeClass{Name: "large", CPU: 8, MemoryMiB: 16 << 10, TerminationGrace: 5 * time.Minute, StartupBudget: 30 * time.Minute}
	XLarge = SizeClass{Name: "xlarge", CPU: 16, MemoryMiB: 64 << 10, TerminationGrace: 10 * time.Minute, StartupBudget: time.Hour}
)

// SizeClasses lists the size classes from smallest to largest.
var SizeClasses = []SizeClass{Small, Medium, Large, XLarge}

// DefaultSizeClass is the class of a model that has none set.
var DefaultSizeClass = Small

// ParseSizeClass returns the size class called name (case-insensitive,
// surrounding space ignored). An unknown name is an error listing the valid
// ones.
func ParseSizeClass(name string) (SizeClass, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	names := make([]string, len(SizeClasses))
	for i, c := range SizeClasses {
		if c.Name == n {
			return c, nil
		}
		names[i] = c.Name
	}
	return SizeClass{}, fmt.Errorf("kube: unknown size class %q: valid classes are %s", name, strings.Join(names, ", "))
}

// String returns the class's name.
func (c SizeClass) String() string { return c.Name }

// DuckDBThreads is DuckDB's threads setting: one per vCPU, as DuckDB's own
// default would be on bare metal; inside a container DuckDB would see the
// node's cores, not the CPU limit, and oversubscribe the quota.
func (c SizeClass) DuckDBThreads() int64 { return c.CPU }

// duckdbHeadroomMiB is memory kept outside DuckDB's memory_limit in every
// class: the Go runtime, the NATS client and its buffers, the HTTP health
// server, Parquet encoding during publication.
const duckdbHeadroomMiB = 256

// DuckDBMemoryLimitMiB is DuckDB's memory_limit in MiB: 75% of the pod's
// memory minus a fixed 256 MiB, which is 62% of a small pod and 75% of an
// xlarge one. memory_limit bounds DuckDB's buffer manager only; DuckDB
// allocates beyond it (some operator state, ART index builds, the
// allocator's fragmentation), and the page cache of the database file and
// WAL is charged to the pod's cgroup too. Exceeding the pod limit gets the
// single writer OOM-killed and costs a WAL replay, while a lower
// memory_limit only makes DuckDB spill to its temp directory on the data
// volume, so the limit is set well below the pod's.
func (c SizeClass) DuckDBMemoryLimitMiB() int64 {
	return c.MemoryMiB*3/4 - duckdbHeadroomMiB
}

// DuckDBMemoryLimit is DuckDBMemoryLimitMiB in DuckDB's syntax, e.g.
// "1280MiB".
func (c SizeClass) DuckDBMemoryLimit() string {
	return fmt.Sprintf("%dMiB", c.DuckDBMemoryLimitMiB())
}

// CPUQuantity is CPU as a Kubernetes quantity.
func (c SizeClass) CPUQuantity() resource.Quantity {
	return *resource.NewQuantity(c.CPU, resource.DecimalSI)
}

// MemoryQuantity is MemoryMiB as a Kubernetes quantity, e.g. "2Gi".
func (c SizeClass) MemoryQuantity() resource.Quantity {
	return *resource.NewQuantity(c.MemoryMiB<<20, resource.BinarySI)
}
