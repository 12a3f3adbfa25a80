package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/model"
)

func init() {
	extraCommands = append(extraCommands, cancelCmd)
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
