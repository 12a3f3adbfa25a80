package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

func init() {
	extraCommands = append(extraCommands, archiveCmd)
}

// archive is what `teactl archive --json` prints: a version's tables with
// the Parquet data files whose union is each table's rows.
type archive struct {
	Model   string         `json:"model"`
	Version int64          `json:"version"`
	Tables  []archiveTable `json:"tables"`
	// Views is the CREATE OR REPLACE VIEW script of the tables listed, one
	// statement a line.
	Views string `json:"views"`
	// S3 is where the files are when the store is S3 (nil for a directory):
	// what a reader configures besides its credentials.
	S3 *archiveS3 `json:"s3,omitempty"`
}

type archiveTable struct {
	Name    string          `json:"name"`
	Rows    int64           `json:"rows"`
	Bytes   int64           `json:"bytes"`   // of its files
	Columns json.RawMessage `json:"columns"` // names and DuckDB types, as the content index records them
	Files   []archiveFile   `json:"files"`
	SQL     string          `json:"sql"` // SELECT * FROM read_parquet([...]), without a semicolon
}

type archiveFile struct {
	URI    string `json:"uri"` // s3://bucket/key, or the absolute path in a directory store
	Key    string `json:"key"` // object key
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

type archiveS3 struct {
	Bucket    string `json:"bucket"`
	Endpoint  string `json:"endpoint,omitempty"` // URL; empty for AWS
	Region    string `json:"region"`
	PathStyle bool   `json:"path_style"`
}

func archiveCmd(e *env) *cobra.Command {
	var version int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "archive MODEL [TABLE]",
		Short: "print the Parquet data files of a version's tables and the SQL that reads them without teatree",
		Long: `archive prints, for each table of a version (default: the latest), the
Parquet data files whose union is the table's rows (their URIs: s3://bucket/key
for an S3 store, the absolute path for a directory store; rows, bytes and
sha256 of each) and a ready SELECT * FROM read_parquet([...]) statement.
Without TABLE it also prints a CREATE VIEW script that maps every table of the
version to its files.

The output is a SQL script: everything but the statements is a '--' comment.
With TABLE the SELECT is a statement; without, the CREATE VIEW script is, so
'teactl archive MODEL | duckdb FILE' makes FILE a database of views over the
version. Files on S3 need the reader's credentials: the output shows the
DuckDB CREATE SECRET for the store's endpoint, with placeholders.

--json prints model, version, tables (name, rows, bytes, columns,
files[{uri, key, rows, bytes, sha256}], sql), views (the CREATE VIEW script)
and, for an S3 store, s3 (bucket, endpoint, region, path_style).`,
		Example: `  teactl archive flights
  teactl archive flights flights --version 12
  teactl archive flights | duckdb flights-views.duckdb
  teactl archive flights --json | jq -r '.tables[].files[].uri'`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.with(true, true, func(d *session) error {
				v, err := d.client.Version(cmd.Context(), args[0], version)
				if err != nil {
					return err
				}
				table := ""
				if len(args) == 2 {
					table = args[1]
				}
				a, err := archiveOf(d.Store, v, table)
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(a)
				}
				return writeArchive(e.stdout, a, table != "")
			})
		},
	}
	c.Flags().Int64Var(&version, "version", 0, "version to describe (default: the latest)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// archiveOf describes the data files of v's tables in store: every table,
// or only table when not "". A table v lacks is model.ErrNotFound, a table
// without data files an error naming it.
func archiveOf(store objstore.Store, v controldb.Version, table string) (archive, error) {
	a := archive{Model: v.Model, Version: v.Version, Tables: []archiveTable{}}
	if s, ok := store.(*objstore.S3); ok {
		c := s.Config()
		a.S3 = &archiveS3{Bucket: c.Bucket, Endpoint: c.Endpoint, Region: c.Region, PathStyle: c.PathStyle}
	}
	var views []string
	for _, t := range v.Tables {
		if table != "" && t.Name != table {
			continue
		}
		files, err := client.DataFiles(v, t)
		if err != nil {
			return a, err
		}
		at := archiveTable{Name: t.Name, Rows: t.Rows, Bytes: t.Bytes, Columns: json.RawMessage("null")}
		if len(t.Schema) > 0 && t.Schema[0] == '[' {
			at.Columns = t.Schema
		}
		uris := make([]string, len(files))
		for i, f := range files {
			uris[i] = store.URI(f.Key)
			at.Files = append(at.Files, archiveFile{URI: uris[i], Key: f.Key, Rows: f.Rows, Bytes: f.Bytes, SHA256: f.SHA256})
		}
		at.SQL = client.ParquetSelect(t, uris) // columns held encoded (HUGEINT as text, …) are cast back
		a.Tables = append(a.Tables, at)
		views = append(views, "CREATE OR REPLACE VIEW "+duck.Ident(t.Name)+" AS "+at.SQL+";")
	}
	if table != "" && len(a.Tables) == 0 {
		names := make([]string, len(v.Tables))
		for i, t := range v.Tables {
			names[i] = t.Name
		}
		return a, fmt.Errorf("%w: %s version %d has no table %q (its tables: %s)", model.ErrNotFound, v.Model, v.Version, table, strings.Join(names, ", "))
	}
	a.Views = strings.Join(views, "\n")
	return a, nil
}

// writeArchive prints a as a SQL script: the files of each table as
// comments, then the statements: the table's SELECT when one table was
// asked for, else the CREATE VIEW script (each table's SELECT commented).
func writeArchive(w io.Writer, a archive, oneTable bool) error {
	files := 0
	for _, t := range a.Tables {
		files += len(t.Files)
	}
	fmt.Fprintf(w, "-- %s version %d: %s, %s\n", a.Model, a.Version, plural(len(a.Tables), "table"), plural(files, "Parquet data file"))
	if a.S3 != nil {
		fmt.Fprintf(w, "-- The files are in S3 bucket %s: give the reader credentials first, in DuckDB:\n-- %s\n", a.S3.Bucket, duckSecret(a.S3))
	}
	for _, t := range a.Tables {
		fmt.Fprintf(w, "--\n-- table %s: %s in %s, %s\n", t.Name, plural(t.Rows, "row"), plural(len(t.Files), "file"), plural(t.Bytes, "byte"))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "--   ROWS\tBYTES\tSHA256\tURI")
		for _, f := range t.Files {
			fmt.Fprintf(tw, "--   %d\t%d\t%.12s\t%s\n", f.Rows, f.Bytes, f.SHA256, f.URI)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if oneTable {
			fmt.Fprintln(w, t.SQL+";")
		} else {
			fmt.Fprintln(w, "-- "+t.SQL+";")
		}
	}
	if !oneTable {
		fmt.Fprintf(w, "--\n-- every table of %s version %d as a view over its files:\n", a.Model, a.Version)
		if a.Views != "" {
			fmt.Fprintln(w, a.Views)
		}
	}
	return nil
}

// plural is n and noun, with an s unless n is 1.
func plural[N int | int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// duckSecret is the DuckDB CREATE SECRET statement that reads the S3 store
// s, with placeholders for the credentials.
func duckSecret(s *archiveS3) string {
	opts := []string{"TYPE s3", "KEY_ID '<access key id>'", "SECRET '<secret access key>'", "REGION " + duck.Literal(s.Region)}
	if s.Endpoint != "" {
		// DuckDB wants host[:port] and says TLS or not apart.
		host, ssl := s.Endpoint, true
		if u, err := url.Parse(s.Endpoint); err == nil && u.Host != "" {
			host, ssl = u.Host, u.Scheme != "http"
		}
		opts = append(opts, "ENDPOINT "+duck.Literal(host))
		if !ssl {
			opts = append(opts, "USE_SSL false")
		}
	}
	if s.PathStyle {
		opts = append(opts, "URL_STYLE 'path'")
	}
	return "CREATE SECRET teatree (" + strings.Join(opts, ", ") + ");"
}
