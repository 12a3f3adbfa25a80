package cli

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
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
			d, err := e.connect(true, false)
			if err != nil {
				return err
			}
			defer d.Close()
			if _, err := d.Ctl.GetModel(cmd.Context(), args[0]); err != nil {
				return err
			}
			vs, err := d.Ctl.ListVersions(cmd.Context(), args[0], expired)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(vs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "VERSION\tCREATED\tREQUESTS\tTABLES\tROWS\tBYTES\tSHA256\t")
			for _, v := range vs {
				var rows int64
				for _, t := range v.Tables {
					rows += t.Rows
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%.12s\t\n", v.Version, v.Created.Local().Format(time.DateTime), v.RequestCount, len(v.Tables), rows, v.Bytes, v.SHA256)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&expired, "expired", false, "include versions removed by retention")
	return c
}

func pullCmd(e *env) *cobra.Command {
	var version int64
	var out string
	c := &cobra.Command{
		Use:   "pull MODEL",
		Short: "download a version's snapshot, verify it, print its path",
		Long: `pull downloads the snapshot of a version (default: the latest), verifies its
sha256 against Postgres and its tables' row counts against the content index,
and moves it into place atomically. Open it with 'duckdb -readonly PATH'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := e.connect(true, true)
			if err != nil {
				return err
			}
			defer d.Close()
			v, err := d.Ctl.GetVersion(cmd.Context(), args[0], version)
			if err != nil {
				return versionErr(args[0], version, err)
			}
			if out == "" {
				out = fmt.Sprintf("%s-v%d.duckdb", v.Model, v.Version)
			}
			if err := e.download(cmd.Context(), d.Store, v, out); err != nil {
				return err
			}
			abs, _ := filepath.Abs(out)
			fmt.Fprintln(e.stdout, abs)
			return nil
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to pull (default: the latest)")
	c.Flags().StringVarP(&out, "output", "o", "", "output path (default: MODEL-vN.duckdb)")
	return c
}

func versionErr(m string, version int64, err error) error {
	if errors.Is(err, model.ErrNotFound) {
		if version == 0 {
			return fmt.Errorf("model %s has no published version (or does not exist): %w", m, err)
		}
		return fmt.Errorf("model %s has no version %d (see 'teactl versions %s'): %w", m, version, m, err)
	}
	return withCode(ExitUnreachable, err)
}

// download fetches v's snapshot to path: to a temporary file next to it,
// with a progress bar on a terminal, then verifies the sha256 and the row
// counts and renames it into place. On any error nothing is left at path.
func (e *env) download(ctx context.Context, store objstore.Store, v controldb.Version, path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".teactl-pull-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	rc, err := store.Get(ctx, v.SnapshotURI)
	if err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return fmt.Errorf("snapshot of %s version %d is missing from the object store (%s): %w", v.Model, v.Version, v.SnapshotURI, err)
		}
		return withCode(ExitUnreachable, err)
	}
	defer rc.Close()
	var w io.Writer = tmp
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.DefaultBytes(v.Bytes, fmt.Sprintf("%s v%d", v.Model, v.Version))
		w = io.MultiWriter(tmp, bar)
	}
	if _, err := io.Copy(w, rc); err != nil {
		return withCode(ExitUnreachable, fmt.Errorf("download %s: %w", v.SnapshotURI, err))
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	sum, n, err := snapshot.FileSHA256(tmp.Name())
	if err != nil {
		return err
	}
	if sum != v.SHA256 || n != v.Bytes {
		return fmt.Errorf("snapshot of %s version %d is corrupt: downloaded %d bytes with sha256 %s, Postgres records %d bytes with %s", v.Model, v.Version, n, sum, v.Bytes, v.SHA256)
	}
	tables, err := snapshot.Describe(ctx, tmp.Name())
	if err != nil {
		return err
	}
	if err := sameTables(v.Tables, tables); err != nil {
		return fmt.Errorf("snapshot of %s version %d does not match its content index: %w", v.Model, v.Version, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}

func sameTables(want []controldb.Table, got []snapshot.Table) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d tables, the index lists %d", len(got), len(want))
	}
	byName := map[string]int64{}
	for _, t := range got {
		byName[t.Name] = t.Rows
	}
	for _, t := range want {
		rows, ok := byName[t.Name]
		if !ok || rows != t.Rows {
			return fmt.Errorf("table %s has %d rows, the index lists %d", t.Name, rows, t.Rows)
		}
	}
	return nil
}

// cached returns the path of v's snapshot in the local cache, pulling it
// when missing. Cache entries are named by version and sha256, so a
// changed object is never mistaken for a cached one.
func (e *env) cached(ctx context.Context, store objstore.Store, v controldb.Version) (string, error) {
	base, err := e.cacheDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(base, "snapshots", v.Model, fmt.Sprintf("%d-%s.duckdb", v.Version, v.SHA256))
	if st, err := os.Stat(path); err == nil && st.Size() == v.Bytes {
		return path, nil
	}
	return path, e.download(ctx, store, v, path)
}

func queryCmd(e *env) *cobra.Command {
	var version int64
	var format, source string
	c := &cobra.Command{
		Use:   `query MODEL "SELECT …"`,
		Short: "run one SELECT on a version's snapshot (pulled and cached), never on the live file",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "csv" && format != "json" {
				return fmt.Errorf("%w: --format %q: use table, csv or json", model.ErrInvalid, format)
			}
			if source != "snapshot" && source != "parquet" {
				return fmt.Errorf("%w: --source %q: use snapshot or parquet", model.ErrInvalid, source)
			}
			if err := functions.ValidateSelect(args[1]); err != nil {
				return err
			}
			d, err := e.connect(true, true)
			if err != nil {
				return err
			}
			defer d.Close()
			v, err := d.Ctl.GetVersion(cmd.Context(), args[0], version)
			if err != nil {
				return versionErr(args[0], version, err)
			}
			var db *sql.DB
			if source == "parquet" {
				db, err = e.archiveDB(cmd.Context(), d.Store, v)
			} else {
				var path string
				if path, err = e.cached(cmd.Context(), d.Store, v); err == nil {
					db, err = duck.Open(cmd.Context(), path, duck.Options{ReadOnly: true})
				}
			}
			if err != nil {
				return err
			}
			defer db.Close()
			rows, err := db.QueryContext(cmd.Context(), args[1])
			if err != nil {
				// DuckDB's message ends with the query and a caret line.
				msg, _, _ := strings.Cut(err.Error(), "\n")
				return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
			}
			defer rows.Close()
			return writeRows(e.stdout, rows, format)
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to query (default: the latest)")
	c.Flags().StringVar(&format, "format", "table", "output format: table, csv or json")
	c.Flags().StringVar(&source, "source", "snapshot", "read the DuckDB snapshot, or the version's Parquet archive (one view per table)")
	return c
}

// cacheDir is teactl's local cache ($TEATREE_CACHE, else the user cache
// directory/teatree).
func (e *env) cacheDir() (string, error) {
	if base := e.getenv("TEATREE_CACHE"); base != "" {
		return base, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "teatree"), nil
}

// archiveDB returns an in-memory DuckDB with one view per table of v over
// its Parquet file from the archive (downloaded into the cache, verified by
// sha256), so a query reads exactly what any other engine would.
func (e *env) archiveDB(ctx context.Context, store objstore.Store, v controldb.Version) (*sql.DB, error) {
	base, err := e.cacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(base, "parquet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := duck.Open(ctx, "", duck.Options{AllowedDirs: []string{dir}})
	if err != nil {
		return nil, err
	}
	for _, t := range v.Tables {
		path := filepath.Join(dir, t.SHA256+".parquet")
		if sum, _, err := snapshot.FileSHA256(path); err != nil || sum != t.SHA256 {
			got, err := objstore.GetFile(ctx, store, t.ParquetURI, path)
			if err != nil {
				db.Close()
				return nil, withCode(ExitUnreachable, fmt.Errorf("download %s: %w", t.ParquetURI, err))
			}
			if got != t.SHA256 {
				os.Remove(path)
				db.Close()
				return nil, fmt.Errorf("Parquet object %s is corrupt: sha256 %s, the content index records %s", t.ParquetURI, got, t.SHA256)
			}
		}
		if _, err := db.ExecContext(ctx, "CREATE VIEW "+duck.Ident(t.Name)+" AS SELECT * FROM read_parquet("+duck.Literal(path)+")"); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

// writeRows prints rows as an aligned table, CSV with a header, or a JSON
// array of objects.
func writeRows(w io.Writer, rows *sql.Rows, format string) error {
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var tw *tabwriter.Writer
	var cw *csv.Writer
	var objs []map[string]any
	switch format {
	case "table":
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	case "csv":
		cw = csv.NewWriter(w)
		cw.Write(cols)
	case "json":
		objs = []map[string]any{}
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		switch format {
		case "table", "csv":
			rec := make([]string, len(vals))
			for i, v := range vals {
				rec[i] = text(v)
			}
			if tw != nil {
				fmt.Fprintln(tw, strings.Join(rec, "\t"))
			} else {
				cw.Write(rec)
			}
		case "json":
			o := make(map[string]any, len(cols))
			for i, c := range cols {
				o[c] = vals[i]
			}
			objs = append(objs, o)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	switch format {
	case "table":
		return tw.Flush()
	case "csv":
		cw.Flush()
		return cw.Error()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(objs)
}

func text(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		return string(x)
	case time.Time:
		if x.Equal(x.Truncate(24 * time.Hour)) { // a DATE
			return x.Format(time.DateOnly)
		}
		return x.Format(time.RFC3339Nano)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

func diffCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "diff MODEL A B",
		Short: "per table: rows added and removed and schema changes from version A to B",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, errA := strconv.ParseInt(args[1], 10, 64)
			b, errB := strconv.ParseInt(args[2], 10, 64)
			if errA != nil || errB != nil || a < 1 || b < 1 {
				return fmt.Errorf("%w: versions must be positive numbers, got %q and %q", model.ErrInvalid, args[1], args[2])
			}
			d, err := e.connect(true, true)
			if err != nil {
				return err
			}
			defer d.Close()
			var paths [2]string
			for i, n := range []int64{a, b} {
				v, err := d.Ctl.GetVersion(cmd.Context(), args[0], n)
				if err != nil {
					return versionErr(args[0], n, err)
				}
				if paths[i], err = e.cached(cmd.Context(), d.Store, v); err != nil {
					return err
				}
			}
			diffs, err := snapshot.Diff(cmd.Context(), paths[0], paths[1])
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(diffs)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TABLE\tCHANGE\tROWS ADDED\tROWS REMOVED\tSCHEMA")
			for _, t := range diffs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Table, t.Change, t.RowsAdded, t.RowsRemoved, t.SchemaChanges())
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func gcCmd(e *env) *cobra.Command {
	var grace time.Duration
	c := &cobra.Command{
		Use:   "gc MODEL...",
		Short: "apply retention now: expire old versions and delete objects no retained version needs",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := e.connect(true, true)
			if err != nil {
				return err
			}
			defer d.Close()
			for _, id := range args {
				m, err := d.Ctl.GetModel(cmd.Context(), id)
				if err != nil {
					return err
				}
				res, err := retention.Run(cmd.Context(), d.Ctl, d.Store, id, m.Retention, m.WriterEpoch, grace)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s: kept %d versions, expired %d, deleted %d objects\n", id, m.Retention, res.Versions, res.Objects)
			}
			return nil
		},
	}
	c.Flags().DurationVar(&grace, "grace", time.Hour, "leave Parquet objects younger than this (a version may be being published)")
	return c
}
