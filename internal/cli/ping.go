package cli

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/teatree/teatree/internal/svcinfo"
)

func init() { extraCommands = append(extraCommands, pingCmd, infoCmd) }

// DefaultDiscoveryWait is how long teactl ping and teactl info collect
// answers (--wait).
const DefaultDiscoveryWait = time.Second

func pingCmd(e *env) *cobra.Command {
	var asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "ping",
		Short: "list every running dispatcher, db-manager and reader (NATS micro services) with its version and round trip",
		Long: `ping sends $SRV.PING (NATS micro service discovery) and lists every
instance that answers within --wait (default 1s): kind (the service name:
teatree-dispatcher, teatree-dbmanager, teatree-reader), id, version, its
metadata (a db-manager's model, a dispatcher's role) and the round trip.
A process that does not answer in time is simply absent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(false, false, func(d *session) error {
				all, err := svcinfo.Ping(d.NC, wait)
				if err != nil {
					return withCode(ExitUnreachable, err)
				}
				slices.SortFunc(all, func(a, b svcinfo.Pinged) int {
					return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
				})
				if asJSON {
					return e.printJSON(all)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tID\tVERSION\tMETADATA\tRTT")
				for _, p := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.ID, p.Version, metadata(p.Metadata), p.RTT.Round(10*time.Microsecond))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON: one object per instance (name, id, version, metadata, rtt_ns)")
	c.Flags().DurationVar(&wait, "wait", DefaultDiscoveryWait, "how long to collect answers")
	return c
}

func infoCmd(e *env) *cobra.Command {
	var asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "info",
		Short: "show every running dispatcher, db-manager and reader: version, uptime, models, stream position, lag, memory, last error",
		Long: `info discovers the NATS micro services with $SRV.INFO and asks each
teatree process for its info (the endpoint "info", subject
teatree.info.<id>), all within --wait (default 1s); a process that does
not answer in time is simply absent, one whose info comes late shows only
what discovery told.

Columns: KIND (service name), ID, VERSION (build), UPTIME, MODELS (a
db-manager's model; the dispatcher's running db-managers; a reader's open
models as model@version), POSITION (stream sequence: a db-manager's last
applied request, the dispatcher's ack floor), LAG (requests its consumer
has not delivered yet, JetStream's num_pending), MEMORY (Go runtime from
the OS plus DuckDB's buffers), LAST-ERROR (the last failed request or
retried step, with its time). --json prints every field.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(false, false, func(d *session) error {
				all, err := svcinfo.Gather(d.NC, wait)
				if err != nil {
					return withCode(ExitUnreachable, err)
				}
				slices.SortFunc(all, func(a, b svcinfo.Info) int {
					return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.ID, b.ID))
				})
				if asJSON {
					return e.printJSON(all)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tID\tVERSION\tUPTIME\tMODELS\tPOSITION\tLAG\tMEMORY\tLAST-ERROR")
				for _, in := range all {
					up, mem, pos, lag, last := "-", "-", "-", "-", "-"
					if !in.Started.IsZero() {
						up = time.Since(in.Started).Round(time.Second).String()
					}
					if t := in.Memory.Total(); t > 0 {
						mem = humanize.IBytes(uint64(t))
					}
					if in.Position > 0 {
						pos = strconv.FormatUint(in.Position, 10)
					}
					if in.Lag != nil {
						lag = strconv.FormatUint(*in.Lag, 10)
					}
					if in.LastError != nil {
						msg, _, _ := strings.Cut(in.LastError.Error, "\n")
						last = in.LastError.Time.Local().Format(time.DateTime) + " " + msg
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Kind, in.ID, in.Version, up, models(in), pos, lag, mem, last)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON: one object per process with every field")
	c.Flags().DurationVar(&wait, "wait", DefaultDiscoveryWait, "how long to wait for the answers")
	return c
}

// models is the MODELS cell of in: model@version where a version is
// known, else the model; "-" for none.
func models(in svcinfo.Info) string {
	if len(in.Models) == 0 {
		return "-"
	}
	out := make([]string, len(in.Models))
	for i, m := range in.Models {
		out[i] = m
		if v, ok := in.Versions[m]; ok {
			out[i] = m + "@" + strconv.FormatInt(v, 10)
		}
	}
	return strings.Join(out, ",")
}

// metadata is k=v,… of md in key order, "-" for none.
func metadata(md map[string]string) string {
	if len(md) == 0 {
		return "-"
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(md)) {
		out = append(out, k+"="+md[k])
	}
	return strings.Join(out, ",")
}
