package cli

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
)

func init() {
	extraCommands = append(extraCommands, derivedCmd)
}

// derivedTable is one derived table as `teactl derived --json` prints it.
type derivedTable struct {
	Table  string   `json:"table"`
	Inputs []string `json:"inputs"`
	// Rule is incremental or full (functions.RuleIncremental, RuleFull);
	// Reason says why a table is recomputed.
	Rule   string `json:"rule"`
	Reason string `json:"reason,omitempty"`
	// Refreshed is when the table was last brought up to date, Path how
	// (incremental, full or rebuild), Millis how long that took.
	Refreshed time.Time `json:"refreshed"`
	Path      string    `json:"path"`
	Millis    float64   `json:"ms"`
	Rows      int64     `json:"rows"`
	Query     string    `json:"query"`
}

func derivedCmd(e *env) *cobra.Command {
	var version int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "derived MODEL[@N]",
		Short: "list a version's derived tables (derive): inputs, rule (incremental or full), last refresh",
		Long: `derived lists the derived tables of a version (default: the latest), as the
version's snapshot records them (_teatree.derived): the tables each query reads
(its inputs), its rule (incremental: appended rows are merged per group; full:
recomputed, with the reason), and its last refresh (when, how: incremental,
full or rebuild, and how long it took), with its rows.

--json prints [{table, inputs, rule, reason, refreshed, path, ms, rows, query}].`,
		Example: `  teactl derived flights
  teactl derived flights@12 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, version, err := modelAt(args[0], version, cmd.Flags().Changed("version"))
			if err != nil {
				return err
			}
			return e.with(true, true, func(d *session) error {
				v, err := d.client.Version(cmd.Context(), m, version)
				if err != nil {
					return err
				}
				db, err := d.client.Open(cmd.Context(), v, client.FromSnapshot)
				if err != nil {
					return err
				}
				defer db.Close()
				ts, err := readDerived(cmd.Context(), db)
				if err != nil {
					return fmt.Errorf("%s version %d: %w", v.Model, v.Version, err)
				}
				if asJSON {
					return e.printJSON(ts)
				}
				return writeDerived(e.stdout, ts)
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to list (default: the latest; MODEL@N says the same)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// readDerived reads _teatree.derived of a snapshot; a snapshot made before
// derived tables existed has none.
func readDerived(ctx context.Context, db *sql.DB) ([]derivedTable, error) {
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT count(*) > 0 FROM duckdb_tables() WHERE schema_name = '_teatree' AND table_name = 'derived'").Scan(&exists); err != nil {
		return nil, err
	}
	ts := []derivedTable{}
	if !exists {
		return ts, nil
	}
	rows, err := db.QueryContext(ctx, "SELECT table_name, inputs, rule, coalesce(reason, ''), refreshed, refresh_path, coalesce(refresh_ms, 0), coalesce(rows, 0), query FROM _teatree.derived ORDER BY table_name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var t derivedTable
		var inputs string
		if err := rows.Scan(&t.Table, &inputs, &t.Rule, &t.Reason, &t.Refreshed, &t.Path, &t.Millis, &t.Rows, &t.Query); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(inputs), &t.Inputs); err != nil {
			return nil, fmt.Errorf("derived table %s: inputs: %w", t.Table, err)
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

func writeDerived(w io.Writer, ts []derivedTable) error {
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "no derived tables (declare one with: teactl submit MODEL derive --args '{\"table\":…,\"query\":…}')")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tINPUTS\tRULE\tLAST REFRESH\tPATH\tMS\tROWS\tWHY FULL")
	for _, t := range ts {
		reason := t.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f\t%d\t%s\n", t.Table, strings.Join(t.Inputs, ","), t.Rule,
			t.Refreshed.UTC().Format(time.RFC3339), t.Path, t.Millis, t.Rows, model.Excerpt(reason, 60))
	}
	return tw.Flush()
}
