package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Stat summarises the runs of one figure.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Spread float64   `json:"spread"` // (max − min) / median
	Runs   []float64 `json:"runs"`
}

// newStat summarises runs (at least one).
func newStat(runs []float64) Stat {
	s := slices.Clone(runs)
	slices.Sort(s)
	st := Stat{Runs: runs, Min: s[0], Max: s[len(s)-1]}
	if n := len(s); n%2 == 1 {
		st.Median = s[n/2]
	} else {
		st.Median = (s[n/2-1] + s[n/2]) / 2
	}
	if st.Median != 0 {
		st.Spread = (st.Max - st.Min) / st.Median
	}
	return st
}

// percentile returns the p-quantile (0..1) of ds by the nearest-rank
// method.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Result is one scenario's figure: teatree's, the baseline's measured in
// the same run, and their ratio.
type Result struct {
	ID       string         `json:"id"`   // e.g. "1a"
	Name     string         `json:"name"` // what was measured
	Unit     string         `json:"unit"` // "req/s", "s", "ms"
	Teatree  Stat           `json:"teatree"`
	Baseline *Stat          `json:"baseline,omitempty"`
	BaseName string         `json:"baseline_name,omitempty"`
	Ratio    float64        `json:"ratio,omitempty"` // see RatioOf
	RatioOf  string         `json:"ratio_of,omitempty"`
	Target   string         `json:"target"`
	Met      *bool          `json:"met,omitempty"`
	Extra    map[string]any `json:"extra,omitempty"` // latencies, peak RSS, …
	Err      string         `json:"error,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	CPU         string `json:"cpu"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	Go          string `json:"go"`
	DuckDB      string `json:"duckdb"`
	NATSServer  string `json:"nats_server"`
	Postgres    string `json:"postgres"`
	WorkFS      string `json:"work_fs"` // filesystem of the work directory
	LoadStart   string `json:"load_start"`
	LoadEnd     string `json:"load_end"`
}

// Report is the JSON document of one run.
type Report struct {
	Started  time.Time `json:"started"`
	Duration string    `json:"duration"`
	Quick    bool      `json:"quick"`
	Machine  Machine   `json:"machine"`
	Settings Config    `json:"settings"`
	Results  []Result  `json:"results"`
}

// writeTable prints the results, ratios first.
func (r *Report) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tscenario\tratio\ttarget\tmet\tteatree (median, spread)\tbaseline (median, spread)\tnotes")
	for _, res := range r.Results {
		ratio, met, base := "-", "-", "-"
		if res.RatioOf != "" {
			ratio = fmt.Sprintf("%.2f", res.Ratio)
		}
		if res.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*res.Met]
		}
		if res.Baseline != nil {
			base = fmtStat(*res.Baseline, res.Unit)
		}
		tt := fmtStat(res.Teatree, res.Unit)
		notes := notes(res)
		if res.Err != "" {
			tt, notes = "error", res.Err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.ID, res.Name, ratio, res.Target, met, tt, base, notes)
	}
	tw.Flush()
	m := r.Machine
	fmt.Fprintf(w, "\nmachine: %d cores (%s), %.1f GiB, %s, %s, DuckDB %s, nats-server %s, %s; work dir on %s; load %s → %s\n",
		m.Cores, m.CPU, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.Go, m.DuckDB, m.NATSServer, m.Postgres, m.WorkFS, m.LoadStart, m.LoadEnd)
}

// fmtStat formats a Stat as "median unit (±spread%)".
func fmtStat(s Stat, unit string) string {
	if len(s.Runs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s %s (±%.0f%%, n=%d)", num(s.Median), unit, 100*s.Spread/2, len(s.Runs))
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// notes renders Extra as "k=v" pairs in a stable order.
func notes(r Result) string {
	keys := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := r.Extra[k]
		if f, ok := v.(float64); ok {
			v = num(f)
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	return strings.Join(parts, " ")
}

// writeJSON writes the report to path.
func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// setRatio sets res.Ratio to the teatree median over the baseline median
// and says what that is.
func (res *Result) setRatio(of string) {
	if res.Baseline == nil || res.Baseline.Median == 0 {
		return
	}
	res.RatioOf = of
	res.Ratio = res.Teatree.Median / res.Baseline.Median
}

func ms(d time.Duration) float64  { return float64(d) / float64(time.Millisecond) }
func sec(d time.Duration) float64 { return d.Seconds() }
func boolp(b bool) *bool          { return &b }
