package cli

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/reader"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/snapshot"
)

func init() {
	extraCommands = append(extraCommands, versionsCmd, pullCmd, queryCmd, diffCmd, gcCmd)
}

func versionsCmd(e *env) *cobra.Command {
	var asJSON, expired bool
	c := &cobra.Command{
		Use:   "versions MODEL",
		Short: "list the published versions of a model",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, false, func(d *session) error {
				vs, err := d.client.Versions(cmd.Context(), args[0], expired)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(vs)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
				head := "VERSION\tCREATED\tREQUESTS\tTABLES\tROWS\tBYTES\tUPLOADED\tKIND\tSHA256\tPINS\t"
				if expired {
					head += "EXPIRED\t"
				}
				fmt.Fprintln(tw, head)
				for _, v := range vs {
					var rows int64
					for _, t := range v.Tables {
						rows += t.Rows
					}
					// KIND: a compaction uploads the whole file; "-" is a version
					// that uploads what changed (or a whole file, before blocks).
					kind := "-"
					if v.Compaction {
						kind = "compaction"
					}
					pins := "-"
					if len(v.Pins) > 0 {
						pins = strings.Join(v.Pins, ",")
					}
					fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%.12s\t%s\t", v.Version, v.Created.Local().Format(time.DateTime), v.RequestCount, len(v.Tables), rows, v.Bytes, v.Uploaded, kind, v.SHA256, pins)
					if expired {
						// Retained versions show "-", expired ones when retention removed them.
						mark := "-"
						if v.Expired != nil {
							mark = v.Expired.Local().Format(time.DateTime)
						}
						fmt.Fprintf(tw, "%s\t", mark)
					}
					fmt.Fprintln(tw)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&expired, "expired", false, "include versions removed by retention")
	return c
}

func pullCmd(e *env) *cobra.Command {
	var version int64
	var out string
	var asJSON, follow bool
	c := &cobra.Command{
		Use:   "pull MODEL[@N|@PIN]",
		Short: "download a version's snapshot, reusing what is local, verify it, print its path",
		Long: `pull writes the snapshot of a version (default: the latest) to a file and
prints its path. Open it with 'duckdb -readonly PATH'. MODEL@N is version
N, MODEL@PIN the version pinned under that name (teactl pin).

A block snapshot is built from the blocks the local files already hold (the
file at the output path, an earlier version usually, and teactl's cached
snapshots of the model), downloading only the missing blocks, 8 at a time.
Every block is verified against its sha256, the block map against the root
digest Postgres records, and the tables' row counts against the content
index. A whole-file snapshot (versions written before block snapshots) is
downloaded whole and verified by its sha256 and row counts. The file is
built beside the output path and renamed over it: on any error nothing
changes at the output path, and a reader that has the old file open keeps
reading the old version. A progress bar in bytes shows on a terminal.

--json prints one JSON object per version pulled, on one line: model,
version, path, digest (the block map's root, or the file's sha256), bytes,
fetched_bytes (downloaded), reused_bytes (copied from local files; for a
block snapshot the rest of bytes is all-zero blocks, which are neither).

--follow keeps the output file at the latest version: after the first pull
it waits for the model's notifications and pulls each newer version over
the file (skipping to the latest when several were published meanwhile),
until interrupted. A failed pull after the first is reported and retried at
the next version (or within 30 s).`,
		Example: `  teactl pull flights -o flights.duckdb
  teactl pull flights -o flights.duckdb --json
  teactl pull flights -o flights.duckdb --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow && (out == "" || version != 0) {
				return fmt.Errorf("%w: --follow needs -o FILE and no --version: it keeps FILE at the latest version", model.ErrInvalid)
			}
			return e.with(true, true, func(d *session) error {
				if follow {
					return e.follow(cmd.Context(), d, args[0], out, asJSON)
				}
				m, n, err := d.client.Resolve(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if n != 0 && cmd.Flags().Changed("version") && n != version {
					return fmt.Errorf("%w: %s is version %d, --version says %d: give one", model.ErrInvalid, args[0], n, version)
				}
				if n == 0 {
					n = version
				}
				v, err := d.client.Version(cmd.Context(), m, n)
				if err != nil {
					return err
				}
				if out == "" {
					out = fmt.Sprintf("%s-v%d.duckdb", v.Model, v.Version)
				}
				p, err := d.client.Pull(cmd.Context(), v, out)
				if err != nil {
					return err
				}
				e.printPulled(p, asJSON, false)
				return nil
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to pull (default: the latest)")
	c.Flags().StringVarP(&out, "output", "o", "", "output path (default: MODEL-vN.duckdb)")
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per version pulled")
	c.Flags().BoolVar(&follow, "follow", false, "keep the output file at the latest version until interrupted")
	return c
}

// cacheLimit bounds teactl's local cache (snapshots and Parquet files
// together, all stacks).
type cacheLimit struct {
	size  string // e.g. "4GiB" (--cache-size, $TEATREE_CACHE_SIZE)
	bytes uint64
}

// register adds --cache-size to c.
func (l *cacheLimit) register(e *env, c *cobra.Command) {
	s := &envflag.Set{FS: c.Flags(), Getenv: e.getenv}
	s.String(&l.size, "cache-size", "TEATREE_CACHE_SIZE", "4GiB", "bound of the local snapshot and Parquet cache; the least recently used files are evicted")
	c.PreRunE = func(*cobra.Command, []string) error {
		if err := s.Err(); err != nil {
			return err
		}
		n, err := humanize.ParseBytes(l.size)
		if err != nil {
			return fmt.Errorf("%w: --cache-size %q: use a size such as 4GiB or 500MB", model.ErrInvalid, l.size)
		}
		l.bytes = n
		return nil
	}
}

func queryCmd(e *env) *cobra.Command {
	var version int64
	var format, source, out, group string
	var local, partial, fanOut bool
	c := &cobra.Command{
		Use:   `query MODEL[@N|@PIN] "SELECT …" | query --group GROUP "SELECT …"`,
		Short: "run one SELECT through a reader, else on a version's snapshot (pulled and cached), never on the live file",
		Long: `query runs one SELECT on a version of a model (default: the latest;
MODEL@N or --version N for version N, MODEL@PIN for the version pinned
under that name, resolved in Postgres here) through a reader when one answers,
else on the version's snapshot pulled into the local cache (--local forces
that): both give the same result.

--format table, csv and json print text rendered by DuckDB; arrow writes an
Arrow IPC stream (a reader's pages passed through as they come). -o FILE
writes the result to FILE in the format its extension names: .parquet
(DuckDB's Parquet writer, fed the Arrow record batches), .arrow (an Arrow
IPC file), .csv and .json (as --format csv and json). The result is
streamed to a file beside FILE and renamed over it when complete: memory
holds a page at a time, and a failed query leaves FILE as it was.

--group GROUP runs the SELECT through a reader over the union of the
latest versions of the group's members (teactl model create --group): each
table is the UNION ALL BY NAME of the members holding it, so every
aggregate is exact. Without a reader (or with --local) the members' pulled
snapshots are attached the same way here. The members and their versions
are printed on stderr. A member that fails fails the query with its name;
--partial leaves it out instead (named on stderr). --fan-out spreads the
query instead: one partial query per member, sent to the readers (each
answered by any of them), merged here; only queries whose partials merge
exactly are accepted (one table; count, sum, min, max, avg, and count, sum
or avg DISTINCT; or rows gathered without aggregates: see the reader
package's documentation), others are refused saying which part does not
merge.`,
		Example: `  teactl query flights "SELECT origin, count(*) FROM flights GROUP BY ALL"
  teactl query flights@3 "SELECT * FROM flights" -o flights-v3.parquet
  teactl query flights "SELECT * FROM flights" --format arrow | python3 read_arrow.py
  teactl query --group flights "SELECT origin, count(*), median(delay) FROM flights GROUP BY origin"
  teactl query --group flights --fan-out "SELECT origin, count(*), avg(delay), count(DISTINCT dest) FROM flights GROUP BY origin"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if group != "" {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := newQueryOutput(format, cmd.Flags().Changed("format"), out)
			if err != nil {
				return err
			}
			if err := e.checkTerminal(o); err != nil {
				return err
			}
			if source != "snapshot" && source != "parquet" {
				return fmt.Errorf("%w: --source %q: use snapshot or parquet", model.ErrInvalid, source)
			}
			if group != "" {
				switch {
				case source != "snapshot" || cmd.Flags().Changed("version"):
					return fmt.Errorf("%w: --group runs on the members' latest snapshots: drop --source and --version", model.ErrInvalid)
				case model.ValidateID(group) != nil:
					return fmt.Errorf("--group %q: %w", group, model.ValidateID(group))
				case fanOut && local:
					return fmt.Errorf("%w: --fan-out sends the query to the readers: drop --local", model.ErrInvalid)
				}
				if err := functions.ValidateSelect(args[0]); err != nil {
					return err
				}
				if fanOut {
					return e.fanOutQuery(cmd.Context(), group, args[0], partial, o)
				}
				return e.groupQuery(cmd.Context(), group, args[0], partial, local, o)
			}
			if partial || fanOut {
				return fmt.Errorf("%w: --partial and --fan-out are for --group", model.ErrInvalid)
			}
			m, version, err := e.resolveAt(cmd.Context(), args[0], version, cmd.Flags().Changed("version"))
			if err != nil {
				return err
			}
			if err := functions.ValidateSelect(args[1]); err != nil {
				return err
			}
			if !local && source == "snapshot" {
				// Through a reader NATS is all it takes: Postgres and the
				// object store are opened only when no reader answers.
				done := false
				err := e.with(false, false, func(d *session) error {
					var err error
					done, err = e.remoteQuery(cmd.Context(), d.NC, m, args[1], version, o)
					return err
				})
				if done || err != nil {
					return err
				}
			}
			return e.with(true, true, func(d *session) error {
				v, err := d.client.Version(cmd.Context(), m, version)
				if err != nil {
					return err
				}
				src := client.FromSnapshot
				if source == "parquet" {
					src = client.FromParquet
				}
				db, err := d.client.Open(cmd.Context(), v, src)
				if err != nil {
					return err
				}
				defer db.Close()
				return e.localQuery(cmd.Context(), db, args[1], o)
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to query (default: the latest; MODEL@N says the same)")
	c.Flags().StringVar(&format, "format", "table", "output format: table, csv, json or arrow (an Arrow IPC stream)")
	c.Flags().StringVarP(&out, "output", "o", "", "write the result to this file, in the format of its extension: .parquet, .arrow (Arrow IPC file), .csv or .json")
	c.Flags().BoolVar(&local, "local", false, "query the pulled snapshot here even when a reader answers (same result)")
	c.Flags().StringVar(&source, "source", "snapshot", "read the DuckDB snapshot, or the version's Parquet archive (one view per table over its data files, as teactl archive lists them)")
	c.Flags().StringVar(&group, "group", "", "query the union of the latest versions of this group's members")
	c.Flags().BoolVar(&partial, "partial", false, "with --group: leave out the members that fail (named on stderr) instead of failing")
	c.Flags().BoolVar(&fanOut, "fan-out", false, "with --group: one partial query per member through the readers, merged here (mergeable aggregates only)")
	e.cache.register(e, c)
	return c
}

// writeQuery runs the SELECT q on db and prints its result as an aligned
// table, CSV with a header, or a JSON array of objects. DuckDB renders
// every value itself, so each type prints as in DuckDB's own CLI: for table
// and csv each column is cast to VARCHAR (NULL prints as NULL in a table
// and as an empty field in CSV, where an empty string is ""), for json
// each row is DuckDB's to_json of the row, keys in column order. q runs
// through DuckDB's query() table function: no SQL text is pasted around it.
func writeQuery(ctx context.Context, w io.Writer, db *sql.DB, q, format string) error {
	rows, err := db.QueryContext(ctx, reader.RenderSQL(q, format))
	if err != nil {
		// DuckDB's message ends with the query and a caret line.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
	}
	defer rows.Close()
	return printRows(w, rows, format)
}

// resultRows are the rows of a query rendered by reader.RenderSQL: a
// *sql.Rows, or a reader's result (remoteRows).
type resultRows interface {
	Columns() ([]string, error)
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// printRows prints rows, rendered by reader.RenderSQL, in format.
func printRows(w io.Writer, rows resultRows, format string) error {
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	bw := bufio.NewWriter(w)
	var tw *tabwriter.Writer
	switch format {
	case "table":
		tw = tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
		head := make([]string, len(cols))
		for i, c := range cols {
			head[i] = cellEscaper.Replace(c)
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
	case "csv":
		writeCSV(bw, cols, nil)
	case "json":
		bw.WriteString("[")
	}
	n := 0
	var buf bytes.Buffer
	for ; rows.Next(); n++ {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		switch format {
		case "table":
			rec := make([]string, len(vals))
			for i, v := range vals {
				rec[i] = "NULL"
				if v.Valid {
					rec[i] = cellEscaper.Replace(v.String)
				}
			}
			fmt.Fprintln(tw, strings.Join(rec, "\t"))
		case "csv":
			rec := make([]string, len(vals))
			null := make([]bool, len(vals))
			for i, v := range vals {
				rec[i], null[i] = v.String, !v.Valid
			}
			writeCSV(bw, rec, null)
		case "json":
			buf.Reset()
			obj := finiteJSON([]byte(vals[0].String))
			if len(obj) == 0 || obj[0] != '{' {
				return fmt.Errorf("%w: a column named %s hides the row: rename it", model.ErrInvalid, reader.RowAlias)
			}
			if err := json.Indent(&buf, obj, "  ", "  "); err != nil {
				return fmt.Errorf("row %d: DuckDB rendered invalid JSON: %w", n+1, err)
			}
			if n > 0 {
				bw.WriteString(",")
			}
			bw.WriteString("\n  ")
			buf.WriteTo(bw)
		}
	}
	if err := rows.Err(); err != nil {
		if errors.Is(err, model.ErrInvalid) || errors.Is(err, reader.ErrLimit) {
			return err // a reader's, already what the user is told
		}
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
	}
	switch format {
	case "table":
		if err := tw.Flush(); err != nil {
			return err
		}
	case "json":
		if n > 0 {
			bw.WriteString("\n")
		}
		bw.WriteString("]\n")
	}
	return bw.Flush()
}

// nonFinite are the tokens DuckDB's to_json writes for non-finite floats
// (not JSON), and the JSON strings teactl prints instead: DuckDB's own
// spelling, which a cast of the JSON value to DOUBLE reads back.
var nonFinite = []struct{ token, str string }{{"NaN", `"nan"`}, {"-Infinity", `"-inf"`}, {"Infinity", `"inf"`}}

// finiteJSON returns b with the non-finite tokens outside strings replaced.
func finiteJSON(b []byte) []byte {
	if json.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		default:
			if r, ok := nonFiniteAt(b[i:]); ok {
				out = append(out, r.str...)
				i += len(r.token) - 1
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

func nonFiniteAt(b []byte) (struct{ token, str string }, bool) {
	for _, r := range nonFinite {
		if bytes.HasPrefix(b, []byte(r.token)) {
			return r, true
		}
	}
	return struct{ token, str string }{}, false
}

// cellEscaper keeps a table cell on one line and in its column.
var cellEscaper = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`)

// writeCSV writes one RFC 4180 record as DuckDB's CSV writer does: a NULL
// field is empty, an empty string is "" (encoding/csv cannot tell them
// apart), fields with a separator, quote, line break or edge space are
// quoted with quotes doubled.
func writeCSV(w *bufio.Writer, rec []string, null []bool) {
	for i, f := range rec {
		if i > 0 {
			w.WriteByte(',')
		}
		isNull := null != nil && null[i]
		switch {
		case isNull:
		case f == "" || strings.ContainsAny(f, ",\"\r\n") || strings.TrimSpace(f) != f:
			w.WriteString(`"` + strings.ReplaceAll(f, `"`, `""`) + `"`)
		default:
			w.WriteString(f)
		}
	}
	w.WriteByte('\n')
}

func diffCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "diff MODEL A B",
		Short: "per table: rows added and removed, schema changes and column profile changes from version A to B",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, errA := strconv.ParseInt(args[1], 10, 64)
			b, errB := strconv.ParseInt(args[2], 10, 64)
			if errA != nil || errB != nil || a < 1 || b < 1 {
				return fmt.Errorf("%w: versions must be positive numbers, got %q and %q", model.ErrInvalid, args[1], args[2])
			}
			return e.with(true, true, func(d *session) error {
				var paths [2]string
				var profiles [2]map[string]tableProfile
				for i, n := range []int64{a, b} {
					v, err := d.client.Version(cmd.Context(), args[0], n)
					if err != nil {
						return err
					}
					if paths[i], err = d.client.Snapshot(cmd.Context(), v); err != nil {
						return err
					}
					vp, err := profileOf(cmd.Context(), d.Store, v, "")
					if err != nil {
						return err
					}
					profiles[i] = map[string]tableProfile{}
					for _, t := range vp.Tables {
						profiles[i][t.Name] = t
					}
				}
				diffs, err := snapshot.Diff(cmd.Context(), paths[0], paths[1])
				if err != nil {
					return err
				}
				type row struct {
					snapshot.TableDiff
					profileDiff
				}
				rows := make([]row, len(diffs))
				for i, t := range diffs {
					rows[i].TableDiff = t
					pa, okA := profiles[0][t.Table]
					pb, okB := profiles[1][t.Table]
					if okA && okB {
						rows[i].profileDiff = diffProfiles(pa, pb)
					}
				}
				if asJSON {
					return e.printJSON(rows)
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TABLE\tCHANGE\tROWS ADDED\tROWS REMOVED\tSCHEMA")
				for _, t := range diffs {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Table, t.Change, t.RowsAdded, t.RowsRemoved, t.SchemaChanges())
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				// Then what changed in the columns' profiles, a line a column.
				for _, r := range rows {
					if r.Error != "" {
						fmt.Fprintf(e.stdout, "%s: profiles not compared: %s\n", r.Table, r.Error)
					}
					for _, c := range r.Columns {
						fmt.Fprintf(e.stdout, "%s.%s: %s\n", r.Table, c.Column, c)
					}
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	e.cache.register(e, c)
	return c
}

func gcCmd(e *env) *cobra.Command {
	var grace time.Duration
	c := &cobra.Command{
		Use:   "gc MODEL...",
		Short: "apply retention now: expire old versions and delete objects no retained version needs",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, true, func(d *session) error {
				for _, id := range args {
					m, err := d.Ctl.GetModel(cmd.Context(), id)
					if err != nil {
						return err
					}
					res, err := retention.Run(cmd.Context(), d.Ctl, d.Store, id, m.Retention, m.WriterEpoch, grace)
					if err != nil {
						return err
					}
					kept, err := d.Ctl.ListVersions(cmd.Context(), id, false)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "%s: %d versions kept (retention %d), %d expired, %d objects deleted, %d blocks deleted (%d bytes), %d modules deleted\n", id, len(kept), m.Retention, res.Versions, res.Objects, res.Blocks, res.BlockBytes, res.Modules)
				}
				return nil
			})
		},
	}
	c.Flags().DurationVar(&grace, "grace", retention.DefaultGrace, "leave snapshot blocks and Parquet data files no retained version uses until this long after their upload and after the expiry of the last version using them (a version may be being published, readers may be pulling)")
	return c
}
