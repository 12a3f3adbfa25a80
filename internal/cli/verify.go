package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/dbmanager"
)

// verifyCmd is teactl model verify MODEL: the request log replayed into a
// scratch copy and compared with the published versions (dbmanager.Verify).
func verifyCmd(e *env) *cobra.Command {
	var from int64
	var asJSON bool
	var threads int
	var memory string
	c := &cobra.Command{
		Use:   "verify MODEL",
		Short: "replay the retained request log into a scratch copy and compare it, version by version and table by table, with the published versions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cache, err := e.cacheDir()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(cache, 0o755); err != nil {
				return err
			}
			dir, err := os.MkdirTemp(cache, "verify-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			return e.with(true, true, func(d *session) error {
				log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
				rep, err := dbmanager.Verify(cmd.Context(), log, d.JS, d.Ctl, d.Store, dbmanager.VerifyOptions{
					Model: args[0], From: from, Dir: dir, Threads: threads, MemoryLimit: memory,
					WasmCacheDir: filepath.Join(cache, "wasm-cache"),
				})
				if err != nil {
					return err
				}
				if asJSON {
					if err := e.printJSON(rep); err != nil {
						return err
					}
				} else {
					writeVerify(e, rep)
				}
				if !rep.OK {
					last := rep.Versions[len(rep.Versions)-1]
					return withCode(ExitDiffers, fmt.Errorf("model %s: version %d: %s", rep.Model, last.Version, last.Diff))
				}
				return nil
			})
		},
	}
	c.Flags().Int64Var(&from, "from-version", 0, "first version to replay, from its parent's snapshot (default: the oldest version whose requests can all still be replayed)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	c.Flags().IntVar(&threads, "duckdb-threads", dbmanager.DefaultThreads, "threads of the scratch DuckDB")
	c.Flags().StringVar(&memory, "duckdb-memory-limit", dbmanager.DefaultMemoryLimit, "memory_limit of the scratch DuckDB")
	return c
}

// writeVerify prints rep as a table of the versions replayed.
func writeVerify(e *env, rep dbmanager.VerifyReport) {
	if rep.Start != "" {
		fmt.Fprintf(e.stdout, "from version %d (not earlier: %s)\n", rep.From, rep.Start)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tREPLAYED\tSKIPPED\tTABLES\tRESULT")
	for _, v := range rep.Versions {
		result := "OK"
		if v.Status != "ok" {
			result = "DIFF: " + v.Diff
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\n", v.Version, v.Replayed, v.Skipped, len(v.Tables), result)
	}
	tw.Flush()
	if rep.OK {
		fmt.Fprintf(e.stdout, "model %s: versions %d to %d are their request log\n", rep.Model, rep.From, rep.Versions[len(rep.Versions)-1].Version)
	}
}
