package functions

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

type appendArgs struct {
	Table   string           `json:"table"`
	Rows    []map[string]any `json:"rows,omitempty"`
	Payload *payloadRef      `json:"payload,omitempty"`
	Source  *sourceRef       `json:"source,omitempty"`
	// Create (default true) creates a missing table from the payload's
	// (or the source's) schema.
	Create *bool `json:"create,omitempty"`
}

// payloadRef names a staged payload.
type payloadRef struct {
	URI       string `json:"uri"`
	Format    string `json:"format,omitempty"`
	Delimiter string `json:"delimiter,omitempty"`
}

// Payload formats.
const (
	formatParquet = "parquet"
	formatCSV     = "csv"
	formatJSON    = "json"
	formatArrow   = "arrow"
)

// formatByExt infers a payload's format from its file extension.
var formatByExt = map[string]string{
	".parquet": formatParquet, ".pq": formatParquet,
	".csv": formatCSV, ".tsv": formatCSV,
	".json": formatJSON, ".jsonl": formatJSON, ".ndjson": formatJSON,
	".arrow": formatArrow, ".arrows": formatArrow, ".ipc": formatArrow, ".feather": formatArrow,
}

// Payload compressions: the values of DuckDB's read_csv and read_json
// compression option. Both are built into DuckDB (no extension needed).
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
)

// compressionByExt infers a payload's compression from its last file
// extension (data.csv.gz).
var compressionByExt = map[string]string{
	".gz": CompressionGzip, ".gzip": CompressionGzip,
	".zst": CompressionZstd, ".zstd": CompressionZstd,
}

// PayloadKind returns what a staged file's name tells: its format (one of
// parquet, csv, json, arrow; "" for an unknown or missing extension), its
// compression ("" for none, else CompressionGzip or CompressionZstd, from
// a last extension .gz, .gzip, .zst or .zstd) and its format extension
// before the compression's, lower-cased (".ndjson" for events.ndjson.gz).
func PayloadKind(name string) (format, compression, ext string) {
	ext = strings.ToLower(path.Ext(name))
	if c, ok := compressionByExt[ext]; ok {
		compression = c
		ext = strings.ToLower(path.Ext(strings.TrimSuffix(name, path.Ext(name))))
	}
	return formatByExt[ext], compression, ext
}

// maxURILen is the longest payload uri.
const maxURILen = 1024

// appendSpec is append: inline rows, a staged Parquet, CSV, JSON or Arrow
// IPC file, or the rows of a Postgres source.
var appendSpec = spec[appendArgs]{
	Name:        "append",
	Summary:     "append inline rows, a staged Parquet, CSV, JSON or Arrow IPC file, or the rows of a Postgres source, to a table (a file or source creates a missing table)",
	Description: "Appends rows to main.<table>. Either rows: inline row objects, matched to the table's columns by name (the table must exist), each value of the JSON kind of its column's type (no casts: see README). Or payload: a file staged in the object store under staging/<model>/<request_id>/ of this very request ('teactl append' stages it), in format parquet, csv (with a header row), json (an array of objects or newline-delimited objects) or arrow (Arrow IPC file or stream); format defaults to the file extension's. A CSV or JSON file may be compressed, told by a last extension .gz or .zst (events.csv.gz, events.ndjson.zst); a .ndjson or .jsonl file holds one object per line. A file whose table does not exist creates it from the file's schema unless create is false (a CSV or JSON file needs rows for that: its types come from them); into an existing table the file's columns must be the table's columns (by name, any order) with castable types. Or source: rows streamed from a Postgres source configured on the db-manager (a query or a table; see README, Postgres sources for the type map), with the same rules as a file.",
	Schema: `"required": ["table"],
  "oneOf": [{"required": ["rows"]}, {"required": ["payload"]}, {"required": ["source"]}],
  "dependentSchemas": {"create": {"anyOf": [{"required": ["payload"]}, {"required": ["source"]}]}},
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "rows": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/row"}},
    "payload": {
      "type": "object", "additionalProperties": false, "required": ["uri"],
      "properties": {
        "uri": {"type": "string", "maxLength": 1024, "pattern": "^staging/[^\\x00]+$", "description": "object store key of the staged file: staging/<model>/<request_id>/<file>, with this request's model and request_id"},
        "format": {"enum": ["parquet", "csv", "json", "arrow"], "description": "default: from the file extension (.parquet .csv .tsv .json .jsonl .ndjson .arrow .arrows .ipc .feather), before a compression extension (.gz .gzip .zst .zstd, csv and json only)"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "description": "csv only: the field delimiter (default ',', or tab for .tsv)"}
      }
    },
    "source": {"$ref": "#/$defs/source"},
    "create": {"type": "boolean", "description": "payload or source only: create a missing table from the file's (the source's) schema (default true)"}
  }`,
	Examples: []string{
		`{"table":"t","rows":[{"id":1,"v":"a"},{"id":2,"v":null}]}`,
		`{"table":"t","payload":{"uri":"staging/shop/0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11/f.parquet","format":"parquet"}}`,
		`{"table":"events","payload":{"uri":"staging/shop/01J2ZK8M3V4W5X6Y7Z8A9B0C1D/events.csv","delimiter":";"},"create":false}`,
		`{"table":"customers","source":{"name":"crm","query":"SELECT id, name, created FROM customers WHERE created >= '2026-01-01'"}}`,
	},
	Check: checkAppend,
	Apply: applyAppend,
}

// checkAppend checks the table and that exactly one of rows, payload and
// source is given, and checks that one.
func checkAppend(a *appendArgs) error {
	if err := checkTable(a.Table); err != nil {
		return err
	}
	given := 0
	for _, g := range []bool{a.Rows != nil, a.Payload != nil, a.Source != nil} {
		if g {
			given++
		}
	}
	switch {
	case given > 1:
		return invalid("give one of rows, payload and source, not several")
	case given == 0:
		return invalid("give rows (inline row objects), payload (a staged file) or source (a Postgres source of the db-manager)")
	case a.Source != nil:
		if err := a.Source.check(); err != nil {
			return err
		}
	case a.Rows != nil:
		if a.Create != nil {
			return invalid("create applies to a payload only: inline rows go into an existing table")
		}
		if err := checkRows(a.Rows); err != nil {
			return err
		}
	default:
		if err := a.Payload.check(); err != nil {
			return err
		}
	}
	return nil
}

// check validates the payload reference without fetching it.
func (p *payloadRef) check() error {
	u := p.URI
	switch {
	case !strings.HasPrefix(u, "staging/"):
		return invalid("payload uri %s must be a staged object, staging/<model>/<request_id>/<file> ('teactl append' stages files)", model.Quote(u))
	case len(u) > maxURILen:
		return invalid("payload uri is %d bytes long: at most %d are allowed", len(u), maxURILen)
	case strings.ContainsFunc(u, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return invalid("payload uri %s holds a control character or a backslash", model.Quote(u))
	case path.Clean(u) != u || strings.HasSuffix(u, "/") || len(u) == len("staging/"):
		return invalid("payload uri %s is not a clean object key (no '..', '.', '//' or trailing '/')", model.Quote(u))
	}
	format := p.format()
	switch {
	case format == formatParquet, format == formatCSV, format == formatJSON, format == formatArrow:
	case p.Format != "":
		return invalid("payload format %s is not one of parquet, csv, json, arrow", model.Quote(p.Format))
	default:
		return invalid("payload uri %s has no known file extension: give payload.format (parquet, csv, json or arrow)", model.Quote(u))
	}
	if c := p.compression(); c != "" && format != formatCSV && format != formatJSON {
		return invalid("payload uri %s is %s-compressed %s: only CSV and JSON files may be compressed (Parquet and Arrow compress inside the file)", model.Quote(u), c, format)
	}
	if p.Delimiter != "" {
		if format != formatCSV {
			return invalid("payload delimiter applies to csv only, not %s", format)
		}
		d := p.Delimiter
		if len(d) != 1 || d[0] < 0x20 && d[0] != '\t' || d[0] >= 0x7f || d == `"` || d == "'" {
			return invalid("payload delimiter %s must be one printable ASCII character (or a tab), not a quote", model.Quote(d))
		}
	}
	return nil
}

// format is the payload's format: the given one, else the extension's
// (before a compression extension).
func (p *payloadRef) format() string {
	if p.Format != "" {
		return p.Format
	}
	f, _, _ := PayloadKind(p.URI)
	return f
}

// compression is the payload's compression from its last extension: "",
// CompressionGzip or CompressionZstd.
func (p *payloadRef) compression() string {
	_, c, _ := PayloadKind(p.URI)
	return c
}

// newlineDelimited reports whether a JSON payload is named as
// newline-delimited JSON (.ndjson, .jsonl): one object per line, read
// with format = 'newline_delimited'; a .json file may be an array or
// objects one after the other (format = 'auto').
func (p *payloadRef) newlineDelimited() bool {
	_, _, ext := PayloadKind(p.URI)
	return ext == ".ndjson" || ext == ".jsonl"
}

// delimiter is the csv field delimiter.
func (p *payloadRef) delimiter() string {
	_, _, ext := PayloadKind(p.URI)
	switch {
	case p.Delimiter != "":
		return p.Delimiter
	case ext == ".tsv":
		return "\t"
	}
	return ","
}

// applyAppend appends the rows, the payload or the source's rows.
func applyAppend(ctx context.Context, env Env, a *appendArgs) (Result, error) {
	if a.Payload != nil {
		return applyPayload(ctx, env, a)
	}
	if a.Source != nil {
		return applySource(ctx, env, a)
	}
	t, err := mustTable(ctx, env, a.Table)
	if err != nil {
		return Result{}, err
	}
	rows, err := bindRows(t, a.Rows)
	if err != nil {
		return Result{}, err
	}
	if env.Rows != nil {
		env.Rows.add(t, rows)
		return Result{Tables: []string{t.Name}, Rows: int64(len(rows)), Appended: true}, nil
	}
	n, err := insertRows(ctx, env.Conn, t, rows, nil, nil)
	if err != nil {
		return Result{}, err
	}
	return Result{Tables: []string{t.Name}, Rows: n, Appended: true}, nil
}

// applyPayload fetches the payload and inserts it with DuckDB's own file
// readers (an Arrow IPC file is converted to Parquet first).
func applyPayload(ctx context.Context, env Env, a *appendArgs) (Result, error) {
	env.Tables.Forget() // the file may create the table
	if env.Payload == nil {
		return Result{}, errors.New("no payload fetcher in Env")
	}
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	if !exists && a.Create != nil && !*a.Create {
		return Result{}, invalid("table %q does not exist and create is false: create it first (create_table), or leave create out to create it from the file's columns", a.Table)
	}
	local, err := env.Payload(ctx, a.Payload.URI)
	if err != nil {
		return Result{}, err
	}
	format := a.Payload.format()
	what := format + " payload " + a.Payload.URI
	typeless := format == formatCSV || format == formatJSON // types come from the rows
	if format == formatArrow {
		pq, err := arrowToParquet(local)
		if err != nil {
			if errors.Is(err, errNotArrow) {
				return Result{}, a.Payload.notValid(strings.TrimPrefix(strings.TrimPrefix(err.Error(), errNotArrow.Error()), ": "), nil)
			}
			return Result{}, fmt.Errorf("%s: %w", what, err)
		}
		defer os.Remove(pq)
		local, format = pq, formatParquet
	}
	if typeless && blankFile(local, a.Payload.compression()) {
		// Not even a CSV header: DuckDB would make up a column0 VARCHAR.
		if !exists {
			return Result{}, errNoSchema(what, a.Table)
		}
		return Result{Tables: []string{t.Name}, Appended: true}, nil
	}
	src := a.Payload.reader(format, !exists)
	cols, err := fileColumns(ctx, env, src, local)
	if err != nil {
		return Result{}, a.Payload.readError("", local, err)
	}
	if err := checkFileColumns(what, cols); err != nil {
		return Result{}, err
	}
	if !exists {
		if _, err := env.Conn.ExecContext(ctx, "CREATE TABLE "+qualified(a.Table)+" AS SELECT * FROM "+src, local); err != nil {
			return Result{}, a.Payload.readError("create table "+a.Table+" from "+what, local, err)
		}
		n, err := countRows(ctx, env.Conn, a.Table)
		if err != nil {
			return Result{}, dbError("count rows of "+a.Table, err)
		}
		if n == 0 && typeless {
			// The caller rolls the transaction back: the table goes.
			return Result{}, errNoSchema(what, a.Table)
		}
		return Result{Tables: []string{a.Table}, Rows: n, Appended: true}, nil
	}
	if err := matchColumns(what, t, cols); err != nil {
		// A JSON file without rows names no columns (DuckDB makes up
		// json JSON): it appends nothing.
		if format == formatJSON && noRows(ctx, env, src, local) {
			return Result{Tables: []string{t.Name}, Appended: true}, nil
		}
		return Result{}, err
	}
	res, err := env.Conn.ExecContext(ctx, "INSERT INTO "+qualified(t.Name)+" BY NAME SELECT * FROM "+src, local)
	if err != nil {
		return Result{}, a.Payload.readError(fmt.Sprintf("insert %s into table %s %s (file columns %s)", what, t.Name, t.columnList(), columnList(cols)), local, err)
	}
	n, _ := res.RowsAffected()
	return Result{Tables: []string{t.Name}, Rows: n, Appended: true}, nil
}

// errNoSchema refuses a CSV or JSON file without rows for a missing table:
// its types come from its rows.
func errNoSchema(what, table string) error {
	return invalid("%s has no rows, so the column types of table %s cannot be known: create the table first (create_table), then append the file", what, table)
}

// noRows reports whether DuckDB reads no rows from the payload.
func noRows(ctx context.Context, env Env, src, local string) bool {
	var n int64
	err := env.Conn.QueryRowContext(ctx, "SELECT count(*) FROM "+src, local).Scan(&n)
	return err == nil && n == 0
}

// blankFile reports whether the file at name, compressed with compression
// ("", CompressionGzip or CompressionZstd), holds only white space (a CSV
// file without even a header line).
func blankFile(name, compression string) bool {
	const most = 64 << 10
	f, err := os.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	var r io.Reader = f
	switch compression {
	case CompressionGzip:
		zr, err := gzip.NewReader(f)
		if err != nil {
			return false
		}
		r = zr
	case CompressionZstd:
		zr, err := zstd.NewReader(f)
		if err != nil {
			return false
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(io.LimitReader(r, most+1))
	return err == nil && len(b) <= most && len(bytes.TrimSpace(b)) == 0
}

// payloadError is an error about a staged payload whose message is one
// line for the request's notification: what was wrong with the file,
// named by its file name (never the server's path to it), and what to do.
// The cause (DuckDB's own error, with its advice and the local path) stays
// in the chain for errors.As and the db-manager's log.
type payloadError struct {
	msg  string
	errs []error
}

func (e *payloadError) Error() string   { return e.msg }
func (e *payloadError) Unwrap() []error { return e.errs }

// formatNoun names each payload format in errors.
var formatNoun = map[string]string{
	formatParquet: "Parquet file", formatCSV: "CSV file", formatJSON: "JSON file", formatArrow: "Arrow IPC file or stream",
}

// notValid is the error for a payload that is not a readable file of its
// format, with a hint of what the reader found; cause may be nil.
func (p *payloadRef) notValid(hint string, cause error) error {
	from := "format from its extension"
	if p.Format != "" {
		from = "format given by the request"
	}
	msg := fmt.Sprintf("%s: staged file %s is not a valid %s (%s)", model.ErrInvalid, model.Quote(path.Base(p.URI)), formatNoun[p.format()], from)
	if hint != "" {
		msg += ": " + hint
	}
	msg += "; check the file or pass its real format (teactl append --format)"
	errs := []error{model.ErrInvalid}
	if cause != nil {
		errs = append(errs, cause)
	}
	return &payloadError{msg: msg, errs: errs}
}

// readError classifies err, returned by DuckDB while it read the payload
// at local, into one line. When the file could not be opened as its
// format at all (what is ""), the error says the file is not a valid file
// of that format; otherwise it says what failed (what) and why, in
// DuckDB's first words. DuckDB errors that are the request's fault wrap
// model.ErrInvalid, and so do DuckDB's generic Invalid error type, with
// which its readers report some malformed files (a corrupt Parquet footer:
// "don't know what type"), and its I/O errors, with which it reports a
// corrupt gzip or zstd stream ("Input is not a GZIP stream", "Data
// corruption detected"): the file was just staged on local disk, and
// retrying a bad file would block the model.
func (p *payloadRef) readError(what, local string, err error) error {
	var de *duckdb.Error
	if !errors.As(err, &de) {
		if what == "" {
			what = "read " + p.format() + " payload " + p.URI
		}
		return fmt.Errorf("%s: %w", what, model.Shorten(err))
	}
	gist := duckGist(de.Msg, local, path.Base(p.URI))
	bad := de.Type == duckdb.ErrorTypeInvalid || de.Type == duckdb.ErrorTypeIO || requestFault(de.Type)
	switch {
	case bad && what == "":
		return p.notValid(gist, err)
	case what == "":
		what = "read " + p.format() + " payload " + p.URI
	}
	if bad {
		return &payloadError{msg: fmt.Sprintf("%s: %s: %s", model.ErrInvalid, what, gist), errs: []error{model.ErrInvalid, err}}
	}
	return &payloadError{msg: fmt.Sprintf("%s: %s", what, gist), errs: []error{err}}
}

// maxGist is the longest gist of a DuckDB error, in bytes.
const maxGist = 300

// duckGist is the gist of DuckDB's error message msg about the staged
// file name, read from the local path local: the lines before DuckDB's
// advice (its possible fixes, the CSV sniffer's search space, the query
// excerpt), without the error-type prefix and the quoted input line, with
// the server's path replaced by the file's name and control characters by
// spaces, joined into one line of at most maxGist bytes (and "…").
func duckGist(msg, local, name string) string {
	msg = strings.ReplaceAll(msg, local, name)
	msg = strings.ReplaceAll(msg, filepath.Dir(local)+string(filepath.Separator), "")
	var parts []string
	for i, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if kind, rest, ok := strings.Cut(line, ": "); i == 0 && ok && strings.HasSuffix(kind, " Error") {
			line = rest
		}
		if line == "" || strings.HasPrefix(line, "Possible fixes") || strings.HasPrefix(line, "Possible solutions") ||
			strings.HasPrefix(line, "The search space") || strings.HasPrefix(line, "LINE ") {
			break
		}
		if strings.HasPrefix(line, "Original Line:") {
			continue
		}
		parts = append(parts, strings.TrimRight(line, ". "))
	}
	g := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.Join(parts, "; "))
	if strings.HasPrefix(g, "Error when sniffing file") {
		g = "no CSV dialect fits it (a delimiter, quoting and the header's number of fields on every row)"
	}
	if len(g) > maxGist {
		n := maxGist
		for n > 0 && !utf8.RuneStart(g[n]) {
			n--
		}
		g = g[:n] + "…"
	}
	return g
}

// reader is the DuckDB table function that reads a payload of format; its
// one parameter is the local path. When creating a table, CSV and JSON
// types are detected from the whole file; into an existing table CSV
// fields are read as text and cast to the table's types by the INSERT.
// CSV files have a header row and must not have ragged rows; skip = 0
// keeps the sniffer from taking a later line for the header (a ragged
// last row made it skip every row before it).
//
// A compressed file (by its name: .gz, .zst) is read with compression =
// 'gzip' or 'zstd', a .ndjson or .jsonl file with format =
// 'newline_delimited'.
func (p *payloadRef) reader(format string, create bool) string {
	var opts []string
	if c := p.compression(); c != "" {
		opts = append(opts, "compression = "+duck.Literal(c))
	}
	switch format {
	case formatCSV:
		opts = append(opts, "delim = "+duck.Literal(p.delimiter()), "header = true", "skip = 0", "strict_mode = true", "null_padding = false")
		if create {
			opts = append(opts, "sample_size = -1")
		} else {
			opts = append(opts, "all_varchar = true")
		}
		return "read_csv(?, " + strings.Join(opts, ", ") + ")"
	case formatJSON:
		if p.newlineDelimited() {
			opts = append(opts, "format = 'newline_delimited'")
		}
		if create {
			opts = append(opts, "sample_size = -1")
		}
		return "read_json(" + strings.Join(append([]string{"?"}, opts...), ", ") + ")"
	}
	return "read_parquet(?)"
}

// fileColumns returns the columns DuckDB reads from the payload.
func fileColumns(ctx context.Context, env Env, src, local string) ([]column, error) {
	rows, err := env.Conn.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "+src+")", local)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.Name, &c.Type); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// checkFileColumns checks the column names of a file.
func checkFileColumns(what string, cols []column) error {
	if len(cols) == 0 {
		return invalid("%s has no columns", what)
	}
	seen := map[string]string{}
	for _, c := range cols {
		if err := checkColumn(what+": column name", c.Name); err != nil {
			return err
		}
		folded := strings.ToLower(c.Name)
		if prev, dup := seen[folded]; dup {
			return invalid("%s has columns %q and %q, one name to DuckDB (names are case-insensitive)", what, prev, c.Name)
		}
		seen[folded] = c.Name
	}
	return nil
}

// matchColumns checks that the file has exactly the table's columns, by
// name (case-insensitively, as DuckDB's BY NAME matches). The error lists
// both sets and what is missing or extra.
func matchColumns(what string, t table, cols []column) error {
	inFile := map[string]bool{}
	for _, c := range cols {
		inFile[strings.ToLower(c.Name)] = true
	}
	inTable := map[string]bool{}
	var missing, extra []string
	for _, c := range t.Columns {
		inTable[strings.ToLower(c.Name)] = true
		if !inFile[strings.ToLower(c.Name)] {
			missing = append(missing, duck.Ident(c.Name))
		}
	}
	for _, c := range cols {
		if !inTable[strings.ToLower(c.Name)] {
			extra = append(extra, duck.Ident(c.Name))
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	var diff []string
	if len(missing) > 0 {
		diff = append(diff, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		diff = append(diff, "extra "+strings.Join(extra, ", "))
	}
	return invalid("%s does not have the columns of table %s (%s): file columns %s, table columns %s", what, t.Name, model.Excerpt(strings.Join(diff, "; "), model.MaxErrorText), columnList(cols), t.columnList())
}
