package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
)

// moduleCmd is `teactl module`: register and list WebAssembly modules
// (docs/wasm.md).
func moduleCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "module", Short: "register and list WebAssembly modules for the wasm function"}
	var o submitOpts
	register := &cobra.Command{
		Use:   "register MODEL NAME FILE.wasm",
		Short: "stage a WebAssembly module and register it under NAME (request register_module)",
		Long: `register uploads FILE.wasm to the object store under
staging/<model>/<request_id>/module.wasm and submits a register_module
request: the db-manager validates the module against ABI version 1
(docs/wasm.md), stores it content-addressed (modules/<model>/<sha256>.wasm),
records it in Postgres and binds NAME to it for later wasm calls. Like
every mutation it goes through the model's request stream.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := client.PrepareModule(args[0], args[1], args[2], o.id)
			if err != nil {
				return err
			}
			return e.with(false, true, func(d *session) error {
				if err := d.client.Stage(cmd.Context(), f); err != nil {
					return err
				}
				return e.queued(cmd.Context(), d, o, func(ctx context.Context) (client.Receipt, error) { return d.client.Submit(ctx, f.Request) })
			})
		},
	}
	o.register(register)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list MODEL",
		Short: "list the registered modules of a model (by name, latest registration first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(args[0]); err != nil {
				return err
			}
			return e.with(true, false, func(d *session) error {
				if _, err := d.Ctl.GetModel(cmd.Context(), args[0]); err != nil {
					return err
				}
				ms, err := d.Ctl.ListModules(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(ms)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tDIGEST\tREGISTERED\tEXPORTS")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Digest, m.Registered.Format(time.RFC3339), strings.Join(m.Exports, ","))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(register, list)
	return c
}
