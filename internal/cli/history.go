package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
)

func init() {
	extraCommands = append(extraCommands, cancelCmd, logCmd, showCmd, pinCmd, unpinCmd)
}

// resolveAt is modelAt that also reads MODEL@PIN: a pin name is resolved
// to its version in Postgres (client.Resolve), so that a reader is always
// asked for a version number.
func (e *env) resolveAt(ctx context.Context, arg string, version int64, versionSet bool) (string, int64, error) {
	m, at, ok := strings.Cut(arg, "@")
	if !ok || at == "" || (at[0] >= '0' && at[0] <= '9') {
		return modelAt(arg, version, versionSet)
	}
	if versionSet {
		return "", 0, fmt.Errorf("%w: %s names a pin and --version a version: give one", model.ErrInvalid, arg)
	}
	var n int64
	err := e.with(true, false, func(d *session) error {
		var err error
		_, n, err = d.client.Resolve(ctx, arg)
		return err
	})
	return m, n, err
}

// logCmd is teactl log MODEL: the versions newest first with their
// lineage, like git log.
func logCmd(e *env) *cobra.Command {
	var asJSON, expired bool
	c := &cobra.Command{
		Use:   "log MODEL",
		Short: "list a model's versions newest first with their lineage (parent, requests, build, DuckDB, modules, reads)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				vs, err := d.client.Versions(cmd.Context(), args[0], expired)
				if err != nil {
					return err
				}
				slices.Reverse(vs)
				if asJSON {
					return e.printJSON(vs)
				}
				for i, v := range vs {
					if i > 0 {
						fmt.Fprintln(e.stdout)
					}
					writeLog(e.stdout, v, false)
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of versions, newest first, each with its lineage")
	c.Flags().BoolVar(&expired, "expired", false, "include versions removed by retention (their lineage stays in Postgres)")
	return c
}

// showCmd is teactl show MODEL@N: one version in full.
func showCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show MODEL[@N|@PIN]",
		Short: "show one version in full: lineage with every request, tables, digests (default: the latest)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				m, n, err := d.client.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				v, err := d.client.Version(cmd.Context(), m, n)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(v)
				}
				writeLog(e.stdout, v, true)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the version as JSON")
	return c
}

// writeLog prints version v as teactl log does: a header line, what made
// it, and its requests (all of them with full, else a count per status).
func writeLog(w io.Writer, v controldb.Version, full bool) {
	head := fmt.Sprintf("version %d", v.Version)
	if len(v.Pins) > 0 {
		head += " (pinned: " + strings.Join(v.Pins, ", ") + ")"
	}
	if v.Expired != nil {
		head += " (expired " + v.Expired.UTC().Format(time.RFC3339) + ")"
	}
	fmt.Fprintln(w, head)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Date:\t%s\n", v.Created.UTC().Format(time.RFC3339))
	l := v.Lineage
	if l == nil {
		fmt.Fprintf(tw, "Requests:\t%d (stream %d-%d); no lineage: published before lineage was recorded\n", v.RequestCount, v.FirstSeq, v.LastSeq)
		tw.Flush()
		return
	}
	parent := "none (first version)"
	if l.Parent > 0 {
		parent = strconv.FormatInt(l.Parent, 10)
	}
	if l.ParentModel != "" {
		parent = fmt.Sprintf("%s@%d (forked)", l.ParentModel, l.Parent)
	}
	fmt.Fprintf(tw, "Parent:\t%s\n", parent)
	fmt.Fprintf(tw, "Built by:\tteatree %s, DuckDB %s\n", l.Build, l.DuckDB)
	fmt.Fprintf(tw, "Root:\t%s\n", v.SHA256)
	if len(l.Modules) > 0 {
		fmt.Fprintf(tw, "Modules:\t%s\n", strings.Join(l.Modules, ", "))
	}
	if len(l.Reads) > 0 {
		var rs []string
		for _, r := range l.Reads {
			if r.Root != "" {
				rs = append(rs, fmt.Sprintf("%s@%d (root %s)", r.Model, r.Version, r.Root))
			} else {
				rs = append(rs, fmt.Sprintf("%s@%d", r.Model, r.Version))
			}
		}
		fmt.Fprintf(tw, "Reads:\t%s\n", strings.Join(rs, ", "))
	}
	count := map[model.Status]int{}
	for _, r := range l.Requests {
		count[r.Status]++
	}
	var parts []string
	for _, st := range []model.Status{model.StatusApplied, model.StatusFailed, model.StatusRejected, model.StatusCancelled} {
		if count[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count[st], st))
		}
	}
	fmt.Fprintf(tw, "Requests:\t%d (stream %d-%d): %s\n", len(l.Requests), v.FirstSeq, v.LastSeq, strings.Join(parts, ", "))
	tw.Flush()
	if !full {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    SEQ\tSTATUS\tFUNCTION\tREQUEST\tARGS DIGEST")
	for _, r := range l.Requests {
		fmt.Fprintf(tw, "    %d\t%s\t%s\t%s\t%.16s\n", r.Seq, r.Status, r.Function, r.ID, r.Digest)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    TABLE\tROWS\tFILES\tSHA256")
	for _, t := range v.Tables {
		fmt.Fprintf(tw, "    %s\t%d\t%d\t%.16s\n", t.Name, t.Rows, len(t.Files), t.SHA256)
	}
	tw.Flush()
}

// pinCmd is teactl pin MODEL N [--name NAME].
func pinCmd(e *env) *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "pin MODEL N",
		Short: "keep version N past retention (until teactl unpin); --name NAME makes MODEL@NAME name it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("%w: pin %s %q: give a positive version number", model.ErrInvalid, args[0], args[1])
			}
			return e.with(true, false, func(d *session) error {
				p, err := d.client.Pin(cmd.Context(), args[0], n, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s version %d pinned as %s@%s\n", p.Model, p.Version, p.Model, p.Name)
				return nil
			})
		},
	}
	c.Flags().StringVar(&name, "name", "", "pin name (a DNS label starting with a letter; default: the version number). A name pinning another version moves")
	return c
}

// unpinCmd is teactl unpin MODEL NAME|N.
func unpinCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin MODEL NAME|N",
		Short: "remove a pin (by its name, or the version number of an unnamed pin); retention may then expire the version",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				p, err := d.client.Unpin(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s@%s unpinned (version %d)\n", p.Model, p.Name, p.Version)
				return nil
			})
		},
	}
}

// cancelCmd is teactl cancel REQUEST_ID: record the cancel, wait for the
// request's outcome, and say whether the cancel won.
func cancelCmd(e *env) *cobra.Command {
	var m string
	var noWait, asJSON bool
	c := &cobra.Command{
		Use:   "cancel REQUEST_ID",
		Short: "cancel a queued request that has not been applied (exit 8 when too late)",
		Long: `cancel records the cancel of a queued request in the KV bucket teatree-cancels,
which the model's db-manager reads before it applies each batch, then waits
for the request's outcome: cancelled (exit 0), or applied, failed or rejected
before the cancel reached the db-manager (exit 8, naming the version that
applied it). The request log names the request's model; --model is needed
only for a request the dispatcher has not recorded yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := model.ValidateRequestID(id); err != nil {
				return err
			}
			return e.with(true, false, func(d *session) error {
				res, err := d.client.Cancel(cmd.Context(), m, id)
				if err != nil {
					return err
				}
				if res.Final != nil {
					if asJSON {
						e.printJSON(res.Final)
					}
					return tooLate(model.Notification{RequestID: id, Status: res.Final.Status, Version: res.Final.Version, Error: res.Final.Error})
				}
				if noWait || res.Receipt.Seq == 0 {
					if asJSON {
						return e.printJSON(map[string]any{"request_id": id, "model": res.Receipt.Model, "cancel": "recorded"})
					}
					fmt.Fprintf(e.stdout, "cancel of %s recorded; 'teactl status %s' tells whether it came in time\n", id, id)
					return nil
				}
				wctx, cancel := context.WithTimeout(cmd.Context(), e.timeout)
				defer cancel()
				n, err := d.client.Wait(wctx, res.Receipt)
				if err != nil {
					if wctx.Err() != nil {
						return withCode(ExitTimeout, fmt.Errorf("cancel of %s recorded, but no outcome came within %s (is the model's db-manager running? see 'teactl status %s')", id, e.timeout, id))
					}
					return err
				}
				if asJSON {
					if err := e.printJSON(n); err != nil {
						return err
					}
				}
				if n.Status != model.StatusCancelled {
					return tooLate(n)
				}
				if !asJSON {
					fmt.Fprintf(e.stdout, "%s cancelled (model %s, stream sequence %d)\n", id, n.Model, n.Seq)
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&m, "model", "", "the request's model (looked up in the request log when not given)")
	c.Flags().BoolVar(&noWait, "no-wait", false, "record the cancel and return without waiting for the outcome")
	c.Flags().BoolVar(&asJSON, "json", false, "print the outcome (notification or request record) as JSON")
	return c
}

// tooLate is the error of a cancel that came after the request's outcome n.
func tooLate(n model.Notification) error {
	switch n.Status {
	case model.StatusApplied:
		return withCode(ExitTooLate, fmt.Errorf("too late: request %s was applied in version %d before the cancel reached the db-manager", n.RequestID, n.Version))
	case model.StatusCancelled:
		return withCode(ExitTooLate, fmt.Errorf("request %s is cancelled already", n.RequestID))
	}
	return withCode(ExitTooLate, fmt.Errorf("too late: request %s was %s before the cancel: %s", n.RequestID, n.Status, n.Error))
}
