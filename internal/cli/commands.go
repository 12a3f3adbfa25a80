package cli

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
)

func dbmanagerCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:                "dbmanager --model M [flags]",
		Short:              "run a db-manager (what `teactl dev` starts per model)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.DBManager(cmd.Context(), args, e.getenv, e.stderr)
		},
	}
}

func dispatcherCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:                "dispatcher [flags]",
		Short:              "run a dispatcher with local db-managers",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.Dispatcher(cmd.Context(), args, e.getenv, e.stderr)
		},
	}
}

func modelCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "model", Short: "create, list, show and verify models"}
	var sizeClass, group string
	var retention int
	var allowSQL, asJSON bool
	create := &cobra.Command{
		Use:   "create MODEL",
		Short: "create a model (a DNS label: lower-case letters, digits, '-')",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(args[0]); err != nil {
				return err
			}
			if group != "" {
				if err := model.ValidateID(group); err != nil {
					return fmt.Errorf("--group %q: %w", group, err)
				}
			}
			return e.with(true, false, func(d *session) error {
				ctx := cmd.Context()
				// The model owns the requests published after this point.
				last, err := queue.StreamLastSeq(ctx, d.JS)
				if err != nil {
					return withCode(ExitUnreachable, fmt.Errorf("%w (is the dispatcher or teactl dev running? it creates the streams)", err))
				}
				m, err := d.Ctl.CreateModel(ctx, controldb.Model{ID: args[0], SizeClass: sizeClass, Retention: retention, AllowSQL: allowSQL, StartSeq: last + 1, Group: group})
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(m)
				}
				fmt.Fprintf(e.stdout, "model %s created (size class %s, keeps %d versions", m.ID, m.SizeClass, m.Retention)
				if m.Group != "" {
					fmt.Fprintf(e.stdout, ", group %s", m.Group)
				}
				fmt.Fprintln(e.stdout, ")")
				return nil
			})
		},
	}
	create.Flags().StringVar(&sizeClass, "size-class", "small", "size class: small, medium, large or xlarge")
	create.Flags().IntVar(&retention, "retention", 10, "how many versions to keep")
	create.Flags().BoolVar(&allowSQL, "allow-sql", false, "enable the privileged sql function for this model")
	create.Flags().StringVar(&group, "group", "", "the model group it belongs to (named like a model; teactl query --group)")
	setGroup := &cobra.Command{
		Use:   "group MODEL [GROUP]",
		Short: "put a model in a group (teactl query --group), or take it out of its group without GROUP",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := ""
			if len(args) == 2 {
				g = args[1]
				if err := model.ValidateID(g); err != nil {
					return fmt.Errorf("group %q: %w", g, err)
				}
			}
			return e.with(true, false, func(d *session) error {
				m, err := d.Ctl.GetModel(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				m.Group = g
				if m, err = d.Ctl.UpdateModel(cmd.Context(), m); err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(m)
				}
				if g == "" {
					fmt.Fprintf(e.stdout, "model %s belongs to no group\n", m.ID)
				} else {
					fmt.Fprintf(e.stdout, "model %s belongs to group %s\n", m.ID, m.Group)
				}
				return nil
			})
		},
	}
	readers := &cobra.Command{
		Use:   "readers MODEL [READER...]",
		Short: "set the models whose requests may read MODEL's versions (refresh args.reads); without READER no other model may",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(args[0]); err != nil {
				return err
			}
			return e.with(true, false, func(d *session) error {
				m, err := d.Ctl.SetReaders(cmd.Context(), args[0], args[1:])
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(m)
				}
				if len(m.Readers) == 0 {
					fmt.Fprintf(e.stdout, "no other model may read model %s\n", m.ID)
				} else {
					fmt.Fprintf(e.stdout, "models %s may read model %s\n", strings.Join(m.Readers, ", "), m.ID)
				}
				return nil
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "list models",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				ms, err := d.Ctl.ListModels(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(ms)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MODEL\tGROUP\tSIZE\tVERSION\tEPOCH\tRETENTION\tSQL\tCREATED")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%t\t%s\n", m.ID, cmp.Or(m.Group, "-"), m.SizeClass, m.CurrentVersion, m.WriterEpoch, m.Retention, m.AllowSQL, m.Created.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	show := &cobra.Command{
		Use:   "show MODEL",
		Short: "show one model",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				m, err := d.Ctl.GetModel(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(m)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "model\t%s\ngroup\t%s\nread by\t%s\nsize class\t%s\ncurrent version\t%d\nwriter epoch\t%d\nretention\t%d versions\nsql enabled\t%t\nfirst stream seq\t%d\ncreated\t%s\n",
					m.ID, cmp.Or(m.Group, "-"), cmp.Or(strings.Join(m.Readers, ", "), "-"), m.SizeClass, m.CurrentVersion, m.WriterEpoch, m.Retention, m.AllowSQL, m.StartSeq, m.Created.Format(time.RFC3339))
				if m.ForkedFrom != nil {
					fmt.Fprintf(tw, "forked from\t%s@%d\nblock namespace\t%s\n", m.ForkedFrom.Model, m.ForkedFrom.Version, m.Namespace)
				}
				return tw.Flush()
			})
		},
	}
	for _, sub := range []*cobra.Command{create, list, show, setGroup, readers} {
		sub.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	}
	c.AddCommand(create, list, show, setGroup, readers, forkCmd(e), verifyCmd(e))
	return c
}

// submitOpts are the options of submit and append.
type submitOpts struct {
	id     string
	wait   bool
	asJSON bool
}

func submitCmd(e *env) *cobra.Command {
	var o submitOpts
	var argsJSON, rowsFile string
	c := &cobra.Command{
		Use:   "submit MODEL FUNCTION --args JSON",
		Short: "submit a request; exit 0 means durably queued (with --wait: applied)",
		Long: `submit publishes one request to the model's request log and waits for the
server's acknowledgement. With --wait it waits for the request's notification
and exits 0 only when the request was applied. --rows FILE adds rows from a
JSON array or newline-delimited JSON file to args.rows. See 'teactl functions'.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := buildArgs(argsJSON, rowsFile)
			if err != nil {
				return err
			}
			return e.submit(cmd.Context(), model.Request{Model: args[0], Function: args[1], Args: a}, o)
		},
	}
	c.Flags().StringVar(&argsJSON, "args", "{}", "the function's args, a JSON object")
	c.Flags().StringVar(&rowsFile, "rows", "", "file with rows (JSON array or NDJSON) for args.rows")
	o.register(c)
	return c
}

func (o *submitOpts) register(c *cobra.Command) {
	c.Flags().StringVar(&o.id, "id", "", "request id (default: a new UUIDv7); reuse it to retry the same request")
	c.Flags().BoolVar(&o.wait, "wait", false, "wait for the request's notification")
	c.Flags().BoolVar(&o.asJSON, "json", false, "print JSON")
}

// buildArgs parses --args and merges --rows into it.
func buildArgs(argsJSON, rowsFile string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(argsJSON))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: --args must be a JSON object, e.g. '{\"table\":\"t\"}': %v", model.ErrInvalid, err)
	}
	if rowsFile != "" {
		data, err := os.ReadFile(rowsFile)
		if err != nil {
			return nil, fmt.Errorf("%w: --rows: %v", model.ErrInvalid, err)
		}
		rows, err := parseRows(data)
		if err != nil {
			return nil, fmt.Errorf("%w: --rows %s: %v", model.ErrInvalid, rowsFile, err)
		}
		obj["rows"] = rows
	}
	return json.Marshal(obj)
}

// parseRows accepts a JSON array of objects or one object per line.
func parseRows(data []byte) (json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var rows []json.RawMessage
		if err := json.Unmarshal(data, &rows); err != nil {
			return nil, err
		}
		return json.Marshal(rows)
	}
	var rows []json.RawMessage
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), model.MaxRequestBytes)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) || line[0] != '{' {
			return nil, fmt.Errorf("line %d is not a JSON object", n)
		}
		rows = append(rows, json.RawMessage(append([]byte{}, line...)))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return json.Marshal(rows)
}

// submit validates, publishes and optionally waits for one request.
func (e *env) submit(ctx context.Context, r model.Request, o submitOpts) error {
	r.ID = o.id
	r, err := client.Prepare(r)
	if err != nil {
		return err
	}
	return e.with(false, false, func(d *session) error {
		return e.queued(ctx, d, o, func(ctx context.Context) (client.Receipt, error) { return d.client.Submit(ctx, r) })
	})
}

// queued runs send (a submit) within --timeout, prints its receipt or,
// with --wait, waits for the request's notification and reports it.
func (e *env) queued(ctx context.Context, d *session, o submitOpts, send func(context.Context) (client.Receipt, error)) error {
	pctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rc, err := send(pctx)
	if err != nil {
		if errors.Is(err, model.ErrConflict) { // the id is another request's
			return withCode(ExitUsage, err)
		}
		return err
	}
	if !o.wait {
		if o.asJSON {
			return e.printJSON(map[string]any{"request_id": rc.RequestID, "model": rc.Model, "function": rc.Function, "status": model.StatusQueued, "stream_seq": rc.Seq, "duplicate": rc.Duplicate})
		}
		fmt.Fprintf(e.stdout, "%s queued (stream sequence %d%s)\n", rc.RequestID, rc.Seq, map[bool]string{true: ", duplicate of an earlier submit"}[rc.Duplicate])
		return nil
	}
	wctx, wcancel := context.WithTimeout(ctx, e.timeout)
	defer wcancel()
	n, err := d.client.Wait(wctx, rc)
	if err != nil {
		if wctx.Err() != nil {
			return withCode(ExitTimeout, fmt.Errorf("request %s is queued but no notification came within %s (see 'teactl status %s')", rc.RequestID, e.timeout, rc.RequestID))
		}
		return err
	}
	return e.report(n, o.asJSON)
}

// report prints a final notification and maps its status to the exit code.
func (e *env) report(n model.Notification, asJSON bool) error {
	if asJSON {
		if err := e.printJSON(n); err != nil {
			return err
		}
	}
	switch n.Status {
	case model.StatusFailed:
		return withCode(ExitFailed, fmt.Errorf("request %s failed: %s", n.RequestID, n.Error))
	case model.StatusRejected:
		return withCode(ExitRejected, fmt.Errorf("request %s rejected: %s", n.RequestID, n.Error))
	case model.StatusCancelled:
		return withCode(ExitCancelled, fmt.Errorf("request %s cancelled (teactl cancel) before it was applied", n.RequestID))
	}
	if !asJSON {
		fmt.Fprintf(e.stdout, "%s applied in version %d\n", n.RequestID, n.Version)
	}
	return nil
}

func appendCmd(e *env) *cobra.Command {
	var o submitOpts
	var format, fromPostgres, query, sourceTable string
	var noCreate bool
	c := &cobra.Command{
		Use:   "append MODEL TABLE FILE | append MODEL TABLE --from-postgres NAME (--query SQL | --table T)",
		Short: "stage a Parquet, CSV, JSON or Arrow IPC file in the object store and append it to a table",
		Long: `append uploads FILE to the object store under staging/<model>/<request_id>/
and submits an append request that references it: large files never travel
through NATS. The table is created from the file's schema when it does not
exist (unless --no-create). The format comes from the extension (.parquet,
.csv, .json/.ndjson/.jsonl, .arrow/.ipc/.feather; CSV and JSON may end in
.gz or .zst) or --format. A file without a known extension is recognised
by its content (gzip or zstd, then Parquet, Arrow IPC, JSON array or
newline-delimited JSON, else CSV) and staged under its name with the
extension of what was found (data → data.csv.gz).

With --from-postgres NAME, no file is staged: the db-manager reads the rows
of --query (one statement returning rows) or --table from its Postgres
source NAME (configured on the db-manager: TEATREE_SOURCE_<NAME> or
--sources FILE) and streams them into the table.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if fromPostgres != "" {
				return cobra.ExactArgs(2)(cmd, args)
			}
			return cobra.ExactArgs(3)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			m, table := args[0], args[1]
			if err := model.ValidateID(m); err != nil {
				return err
			}
			if fromPostgres == "" && (query != "" || sourceTable != "") {
				return withCode(ExitUsage, fmt.Errorf("%w: --query and --table go with --from-postgres NAME", model.ErrInvalid))
			}
			if fromPostgres != "" {
				if format != "" {
					return withCode(ExitUsage, fmt.Errorf("%w: --format applies to a file, not --from-postgres", model.ErrInvalid))
				}
				src := map[string]string{"name": fromPostgres}
				if query != "" {
					src["query"] = query
				}
				if sourceTable != "" {
					src["table"] = sourceTable
				}
				a := map[string]any{"table": table, "source": src}
				if noCreate {
					a["create"] = false
				}
				args2, _ := json.Marshal(a)
				return e.submit(cmd.Context(), model.Request{Model: m, Function: "append", Args: args2}, o)
			}
			f, err := client.PrepareFile(m, table, args[2], client.FileOptions{ID: o.id, Format: format, NoCreate: noCreate})
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
	c.Flags().StringVar(&format, "format", "", "parquet, csv, json or arrow (default: from the extension, else the content)")
	c.Flags().StringVar(&fromPostgres, "from-postgres", "", "read the rows from the db-manager's Postgres source NAME instead of a file")
	c.Flags().StringVar(&query, "query", "", "with --from-postgres: the statement whose rows to append")
	c.Flags().StringVar(&sourceTable, "table", "", "with --from-postgres: the source table (or schema.table) to append")
	c.Flags().BoolVar(&noCreate, "no-create", false, "fail when the table does not exist instead of creating it from the file")
	o.register(c)
	return c
}

func watchCmd(e *env) *cobra.Command {
	var since int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "watch MODEL",
		Short: "print the model's notifications as they come (Ctrl-C to stop)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m := args[0]
			if err := model.ValidateID(m); err != nil {
				return err
			}
			// --since N (0 included) reads what the stream retains; without
			// it only new notifications are shown.
			replay := cmd.Flags().Changed("since")
			if since < 0 {
				return fmt.Errorf("%w: --since %d: give a version number, or 0 for every retained notification", model.ErrInvalid, since)
			}
			return e.with(false, false, func(d *session) error {
				sub, err := d.client.Watch(cmd.Context(), m, notify.Start{All: replay})
				if err != nil {
					return err
				}
				defer sub.Stop()
				for {
					n, err := sub.Next(cmd.Context())
					if err != nil {
						if cmd.Context().Err() != nil {
							return nil
						}
						return err
					}
					if since > 0 && n.Version <= since && n.Status != model.StatusRejected { // rejected requests have no version
						continue
					}
					if asJSON {
						b, _ := json.Marshal(n)
						fmt.Fprintln(e.stdout, string(b))
						continue
					}
					line := fmt.Sprintf("%s  %-8s  v%-5d  %-12s  %s", n.Published.Format(time.RFC3339), n.Status, n.Version, n.Function, n.RequestID)
					if n.Error != "" {
						line += "  " + n.Error
					}
					fmt.Fprintln(e.stdout, line)
				}
			})
		},
	}
	c.Flags().Int64Var(&since, "since", 0, "first show the retained notifications of versions after this one (0: all retained, rejected requests included), then new ones")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return c
}

func statusCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status REQUEST_ID",
		Short: "show a request's status from the request log in Postgres",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				r, err := d.Ctl.GetRequest(cmd.Context(), args[0])
				if err != nil {
					if errors.Is(err, model.ErrNotFound) {
						return fmt.Errorf("request %s is not in the request log (not yet seen by the dispatcher, or never submitted): %w", args[0], err)
					}
					return err
				}
				if asJSON {
					return e.printJSON(r)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "request\t%s\nmodel\t%s\nfunction\t%s\nstatus\t%s\nversion\t%d\nstream seq\t%d\n", r.RequestID, r.Model, r.Function, r.Status, r.Version, r.StreamSeq)
				if r.Error != "" {
					fmt.Fprintf(tw, "error\t%s\n", r.Error)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func functionsCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "functions [FUNCTION]",
		Short: "list the functions a request can call, or show one's args schema",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				f, err := functions.Lookup(args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s: %s\n\nargs schema:\n", f.Name(), f.Summary())
				var buf bytes.Buffer
				json.Indent(&buf, f.Schema(), "", "  ")
				fmt.Fprintln(e.stdout, buf.String())
				return nil
			}
			if asJSON {
				type fn struct {
					Name    string          `json:"name"`
					Summary string          `json:"summary"`
					Schema  json.RawMessage `json:"schema"`
				}
				var out []fn
				for _, f := range functions.All() {
					out = append(out, fn{f.Name(), f.Summary(), f.Schema()})
				}
				return e.printJSON(out)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			for _, f := range functions.All() {
				fmt.Fprintf(tw, "%s\t%s\n", f.Name(), f.Summary())
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON with each function's args schema")
	return c
}

// migrateCmd applies the control-table migrations: the Kubernetes
// migration Job runs it; the dispatcher migrates at start unless told not
// to (--migrate=false).
func migrateCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "create or upgrade the Postgres control tables (goose migrations; safe to run concurrently)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if e.common.PostgresURL == "" {
				return withCode(ExitUsage, errors.New("no Postgres: set --postgres-url or TEATREE_POSTGRES_URL"))
			}
			ctl, err := controldb.Open(cmd.Context(), e.common.PostgresURL)
			if err != nil {
				return withCode(ExitUnreachable, err)
			}
			defer ctl.Close()
			if err := ctl.Migrate(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "control tables are up to date")
			return nil
		},
	}
}

// forkCmd is teactl model fork SRC DST [--version N].
func forkCmd(e *env) *cobra.Command {
	var version int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "fork SRC DST",
		Short: "create model DST whose first version is SRC at --version N (default: the latest), sharing its blocks and data files",
		Long: `fork creates model DST as a branch of model SRC: DST's version 1 is SRC's
version N (MODEL@PIN works too) without copying data. DST shares SRC's block
namespace, so blocks and Parquet data files are stored once and retention of
either model keeps what any of them lists. DST then takes its own requests
(those published from now on) and keeps SRC's settings (size class,
retention, allow-sql) and module registrations. DST must not exist.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, true, func(d *session) error {
				ctx := cmd.Context()
				src, n, err := d.client.Resolve(ctx, args[0])
				if err != nil {
					return err
				}
				if n != 0 && version != 0 && n != version {
					return fmt.Errorf("%w: %s names version %d and --version %d: give one", model.ErrInvalid, args[0], n, version)
				}
				n = cmp.Or(n, version)
				m, err := d.client.Fork(ctx, src, n, args[1])
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(m)
				}
				fmt.Fprintf(e.stdout, "model %s forked from %s@%d (shares the blocks of %s; keeps %d versions)\n", m.ID, m.ForkedFrom.Model, m.ForkedFrom.Version, m.Namespace, m.Retention)
				return nil
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "the version of SRC to fork (default: the latest)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the new model as JSON")
	return c
}
