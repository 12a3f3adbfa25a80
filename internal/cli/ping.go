package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, pingCmd) }

// pinged is one service instance that answered teactl ping: its $SRV.PING
// identity and its $SRV.STATS.
type pinged struct {
	micro.ServiceIdentity
	Started   time.Time              `json:"started"`
	Endpoints []*micro.EndpointStats `json:"endpoints"`
}

func pingCmd(e *env) *cobra.Command {
	var asJSON bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "ping",
		Short: "list the running NATS micro services (readers) with their version, uptime and request counts",
		Long: `ping sends $SRV.PING (NATS micro service discovery) and lists every
instance that answers within --wait, with its $SRV.STATS: name, id,
version, uptime, requests, errors and the last error; a reader adds the
versions it serves.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := e.connect(false, false)
			if err != nil {
				return err
			}
			defer d.Close()
			inbox := d.NC.NewRespInbox()
			sub, err := d.NC.SubscribeSync(inbox)
			if err != nil {
				return withCode(ExitUnreachable, err)
			}
			defer sub.Unsubscribe()
			if err := d.NC.PublishRequest("$SRV.PING", inbox, nil); err != nil {
				return withCode(ExitUnreachable, err)
			}
			var all []pinged
			deadline := time.Now().Add(wait)
			for {
				msg, err := sub.NextMsg(time.Until(deadline))
				if err != nil {
					break // the wait is over
				}
				var p micro.Ping
				if json.Unmarshal(msg.Data, &p) != nil || p.Name == "" {
					continue
				}
				s := pinged{ServiceIdentity: p.ServiceIdentity}
				subj, err := micro.ControlSubject(micro.StatsVerb, p.Name, p.ID)
				if err == nil {
					if reply, err := d.NC.Request(subj, nil, wait); err == nil {
						var st micro.Stats
						if json.Unmarshal(reply.Data, &st) == nil {
							s.Started, s.Endpoints = st.Started, st.Endpoints
						}
					}
				}
				all = append(all, s)
			}
			slices.SortFunc(all, func(a, b pinged) int { return strings.Compare(a.Name+a.ID, b.Name+b.ID) })
			if asJSON {
				return e.printJSON(all)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tVERSION\tUPTIME\tREQUESTS\tERRORS\tLAST ERROR\tDATA")
			for _, s := range all {
				var reqs, errs int
				var last, data string
				for _, ep := range s.Endpoints {
					reqs, errs = reqs+ep.NumRequests, errs+ep.NumErrors
					last = cmp.Or(ep.LastError, last)
					if len(ep.Data) > 0 && string(ep.Data) != "null" {
						data = string(ep.Data)
					}
				}
				up := "-"
				if !s.Started.IsZero() {
					up = time.Since(s.Started).Round(time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.Name, s.ID, s.Version, up, reqs, errs, cmp.Or(last, "-"), cmp.Or(data, "-"))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&wait, "wait", 500*time.Millisecond, "how long to collect answers")
	return c
}
