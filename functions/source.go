package functions

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// sourceRef names a Postgres source and what to read from it: a query (one
// statement returning rows) or a table.
type sourceRef struct {
	Name  string `json:"name"`
	Query string `json:"query,omitempty"`
	Table string `json:"table,omitempty"`
}

// sourceNamePattern is a source's name: what follows TEATREE_SOURCE_ in
// an environment variable, lower-cased.
var sourceNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// sourceTablePattern is a Postgres table, optionally schema-qualified,
// spelled as its catalog spells it (it is quoted: case matters).
var sourceTablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$`)

// ValidSourceName reports whether name may name a source.
func ValidSourceName(name string) bool { return sourceNamePattern.MatchString(name) }

// check validates the source reference without connecting.
func (s *sourceRef) check() error {
	switch {
	case !sourceNamePattern.MatchString(s.Name):
		return invalid("source name %s is not valid: use 1 to 63 lower-case letters, digits and '_', starting with a letter (the db-manager's TEATREE_SOURCE_<NAME>)", model.Quote(s.Name))
	case s.Query != "" && s.Table != "":
		return invalid("source: give query or table, not both")
	case s.Query == "" && s.Table == "":
		return invalid("source: give query (one SELECT) or table (a Postgres table, schema.table)")
	case s.Table != "" && !sourceTablePattern.MatchString(s.Table):
		return invalid("source table %s is not a table name: use name or schema.name, as the Postgres catalog spells them", model.Quote(s.Table))
	case len(s.Query) > MaxSQLLen:
		return invalid("source query is %d bytes long: at most %d are allowed", len(s.Query), MaxSQLLen)
	case strings.IndexByte(s.Query, 0) >= 0:
		return invalid("source query contains a NUL byte")
	}
	return nil
}

// query is the statement that reads the source's rows.
func (s *sourceRef) query() string {
	if s.Table != "" {
		return "SELECT * FROM " + pgx.Identifier(strings.Split(s.Table, ".")).Sanitize()
	}
	// COPY (…) takes no trailing semicolon.
	return strings.TrimRight(strings.TrimSpace(s.Query), "; \t\r\n")
}

// sourceTemp is the name under which the appended rows are visible to the
// appender's INSERT.
const sourceTemp = "_teatree_source"

// applySource streams the rows of a Postgres source into main.<table>
// through DuckDB's query appender, inside the caller's transaction.
//
// The source is read in one read-only, repeatable-read Postgres
// transaction: the query is prepared first (one statement that returns
// rows, with no parameters: the extended protocol refuses more than one
// statement), which gives the column types, then copied with COPY (query)
// TO STDOUT (FORMAT binary). Each CopyData message is decoded (pgtype's
// binary codecs) and appended as it arrives: memory holds one row and the
// appender's chunk, whatever the number of rows.
func applySource(ctx context.Context, env Env, a *appendArgs) (Result, error) {
	env.Tables.forget() // the source may create the table
	s := a.Source
	dsn, ok := env.Sources[s.Name]
	if !ok {
		known := make([]string, 0, len(env.Sources))
		for n := range env.Sources {
			known = append(known, n)
		}
		slices.Sort(known)
		if len(known) == 0 {
			return Result{}, invalid("unknown source %s: this db-manager has no sources configured (TEATREE_SOURCE_%s=postgres://… or --sources FILE)", model.Quote(s.Name), strings.ToUpper(s.Name))
		}
		return Result{}, invalid("unknown source %s: this db-manager knows %s", model.Quote(s.Name), strings.Join(known, ", "))
	}
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	if !exists && a.Create != nil && !*a.Create {
		return Result{}, invalid("table %q does not exist and create is false: create it first (create_table), or leave create out to create it from the source's columns", a.Table)
	}
	what := "source " + s.Name
	pg, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Result{}, fmt.Errorf("%s: connect: %w", what, err)
	}
	defer pg.Close(context.WithoutCancel(ctx))
	tx, err := pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return Result{}, fmt.Errorf("%s: begin: %w", what, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	q := s.query()
	sd, err := pg.PgConn().Prepare(ctx, "", q, nil)
	if err != nil {
		return Result{}, sourceError(what, "prepare the query", err)
	}
	if len(sd.ParamOIDs) > 0 {
		return Result{}, invalid("%s: the query has %d parameters ($1…): write the values into it", what, len(sd.ParamOIDs))
	}
	if len(sd.Fields) == 0 {
		return Result{}, invalid("%s: the query returns no columns: give a SELECT", what)
	}
	cols, err := sourceColumns(ctx, pg, what, sd.Fields)
	if err != nil {
		return Result{}, err
	}
	fileCols := make([]column, len(cols))
	for i, c := range cols {
		fileCols[i] = column{Name: c.name, Type: c.duck}
	}
	if err := checkFileColumns(what, fileCols); err != nil {
		return Result{}, err
	}
	if exists {
		if err := matchColumns(what, t, fileCols); err != nil {
			return Result{}, err
		}
	} else {
		defs := make([]string, len(cols))
		for i, c := range cols {
			defs[i] = duck.Ident(c.name) + " " + c.duck
		}
		if _, err := env.Conn.ExecContext(ctx, "CREATE TABLE "+qualified(a.Table)+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return Result{}, dbError("create table "+a.Table+" from "+what, err)
		}
	}
	infos := make([]duckdb.TypeInfo, len(cols))
	names := make([]string, len(cols))
	for i, c := range cols {
		infos[i], names[i] = c.info, c.name
	}
	target := a.Table
	if exists {
		target = t.Name
	}
	insert := "INSERT INTO " + qualified(target) + " BY NAME SELECT * FROM " + sourceTemp
	var n int64
	err = env.Conn.Raw(func(dc any) error {
		dconn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("connection %T is not a DuckDB driver connection", dc)
		}
		app, err := duckdb.NewQueryAppender(dconn, insert, sourceTemp, infos, names)
		if err != nil {
			return dbError("open an appender on "+target, err)
		}
		vals := make([]driver.Value, len(cols)) // AppendRow copies the values
		w := &copyReader{cols: len(cols), row: func(fields [][]byte) error {
			for i, src := range fields {
				if vals[i] = nil; src == nil {
					continue
				}
				v, err := cols[i].dec(src)
				if err != nil {
					return invalid("%s: column %s row %d: %v", what, duck.Ident(cols[i].name), n+1, err)
				}
				vals[i] = v
			}
			if err := app.AppendRow(vals...); err != nil {
				return dbError(fmt.Sprintf("append row %d of %s", n+1, what), err)
			}
			n++
			return nil
		}}
		_, err = pg.PgConn().CopyTo(ctx, w, "COPY (\n"+q+"\n) TO STDOUT (FORMAT binary)")
		if err == nil && !w.done {
			err = errors.New("the COPY ended without its trailer")
		}
		if err != nil {
			app.Clear()
			app.Close()
			var pe *pgconn.PgError
			if w.err != nil {
				return w.err
			}
			if errors.As(err, &pe) {
				return sourceError(what, fmt.Sprintf("copy after %d rows", n), err)
			}
			return fmt.Errorf("%s: copy after %d rows: %w", what, n, err)
		}
		if err := app.Close(); err != nil {
			return dbError("insert the rows of "+what+" into "+target, err)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Tables: []string{target}, Rows: n, Appended: true}, nil
}

// sourceError wraps an error of Postgres about the request's query:
// syntax, unknown relations and columns, permissions and read-only
// violations are the request's fault (model.ErrInvalid); a connection
// lost or a server shutting down is not.
func sourceError(what, doing string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "42", "22", "25", "0A", "2B", "21", "23", "P0":
			return fmt.Errorf("%w: %s: %s: %s (SQLSTATE %s)", model.ErrInvalid, what, doing, pe.Message, pe.Code)
		}
	}
	return fmt.Errorf("%s: %s: %w", what, doing, err)
}

// sourceColumn is one column of a source: its name, its DuckDB type, the
// appender's type and the decoder of its binary values.
type sourceColumn struct {
	name string
	duck string
	info duckdb.TypeInfo
	dec  decoder
}

// decoder turns one binary Postgres value (never NULL) into a value the
// DuckDB appender takes.
type decoder func(src []byte) (any, error)

// sourceColumns maps the columns of a Postgres result to DuckDB. See
// pgTypes for the map; a column of another type is an error naming it
// and its type, with what to do.
func sourceColumns(ctx context.Context, pg *pgx.Conn, what string, fields []pgconn.FieldDescription) ([]sourceColumn, error) {
	m := pg.TypeMap()
	cols := make([]sourceColumn, len(fields))
	for i, fd := range fields {
		c, ok, err := mapType(m, fd.DataTypeOID, fd.TypeModifier)
		if err != nil {
			return nil, err
		}
		if !ok {
			var typ string
			if err := pg.QueryRow(ctx, "SELECT format_type($1, $2)", fd.DataTypeOID, fd.TypeModifier).Scan(&typ); err != nil {
				typ = fmt.Sprintf("oid %d", fd.DataTypeOID)
			}
			return nil, invalid("%s: column %s has Postgres type %s, which teatree does not map to DuckDB: cast it in the query (%s::text, say)", what, model.Quote(fd.Name), typ, pgx.Identifier{fd.Name}.Sanitize())
		}
		c.name = fd.Name
		cols[i] = c
	}
	return cols, nil
}

// Postgres type OIDs (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// arrayElem maps the 1-dimensional array types teatree reads to their
// element types (pg_type.dat typarray).
var arrayElem = map[uint32]uint32{
	1000: oidBool, 1005: oidInt2, 1007: oidInt4, 1016: oidInt8, 1009: oidText, 1015: oidVarchar,
	1014: oidBPChar, 1021: oidFloat4, 1022: oidFloat8, 1231: oidNumeric, 2951: oidUUID,
	1182: oidDate, 1115: oidTimestamp, 1185: oidTimestamptz, 1187: oidInterval, 1001: oidBytea,
}

// mapType maps Postgres type oid (with type modifier typmod) to DuckDB:
//
//	bool → BOOLEAN; smallint, integer, bigint → SMALLINT, INTEGER, BIGINT;
//	oid → UINTEGER; real, double precision → FLOAT, DOUBLE;
//	numeric(p,s) with p ≤ 38 → DECIMAL(p,s), other numeric → DOUBLE
//	(as DuckDB's postgres_scanner does); text, varchar(n), char(n),
//	name → VARCHAR; bytea → BLOB; date → DATE; time → TIME;
//	timestamp → TIMESTAMP; timestamptz → TIMESTAMPTZ; interval →
//	INTERVAL; uuid → UUID; json, jsonb → JSON; a 1-dimensional array of
//	any of these (but json) → a LIST of it.
//
// ok is false for any other type. Values DuckDB cannot hold fail the row
// with an error naming the column: infinite dates and timestamps, numeric
// NaN or infinity into a DECIMAL, arrays of more than one dimension.
func mapType(m *pgtype.Map, oid uint32, typmod int32) (sourceColumn, bool, error) {
	if elem, ok := arrayElem[oid]; ok {
		c, ok, err := mapType(m, elem, typmod)
		if !ok || err != nil {
			return c, ok, err
		}
		info, err := duckdb.NewListInfo(c.info)
		if err != nil {
			return c, false, err
		}
		return sourceColumn{duck: c.duck + "[]", info: info, dec: listOf(m, oid, c.dec)}, true, nil
	}
	prim := func(ddl string, t duckdb.Type, dec decoder) (sourceColumn, bool, error) {
		info, err := duckdb.NewTypeInfo(t)
		return sourceColumn{duck: ddl, info: info, dec: dec}, err == nil, err
	}
	switch oid {
	case oidBool:
		return prim("BOOLEAN", duckdb.TYPE_BOOLEAN, scan(m, oid, func(v bool) (any, error) { return v, nil }))
	case oidInt2:
		return prim("SMALLINT", duckdb.TYPE_SMALLINT, scan(m, oid, func(v int16) (any, error) { return v, nil }))
	case oidInt4:
		return prim("INTEGER", duckdb.TYPE_INTEGER, scan(m, oid, func(v int32) (any, error) { return v, nil }))
	case oidInt8:
		return prim("BIGINT", duckdb.TYPE_BIGINT, scan(m, oid, func(v int64) (any, error) { return v, nil }))
	case oidOID:
		return prim("UINTEGER", duckdb.TYPE_UINTEGER, scan(m, oid, func(v uint32) (any, error) { return v, nil }))
	case oidFloat4:
		return prim("FLOAT", duckdb.TYPE_FLOAT, scan(m, oid, func(v float32) (any, error) { return v, nil }))
	case oidFloat8:
		return prim("DOUBLE", duckdb.TYPE_DOUBLE, scan(m, oid, func(v float64) (any, error) { return v, nil }))
	case oidText, oidVarchar, oidBPChar, oidName:
		// The binary form of text types is their UTF-8 bytes.
		return prim("VARCHAR", duckdb.TYPE_VARCHAR, func(src []byte) (any, error) { return string(src), nil })
	case oidJSON:
		return prim("JSON", duckdb.TYPE_VARCHAR, func(src []byte) (any, error) { return string(src), nil })
	case oidJSONB:
		// Binary jsonb is a version byte (1) and the JSON text.
		return prim("JSON", duckdb.TYPE_VARCHAR, func(src []byte) (any, error) {
			if len(src) == 0 || src[0] != 1 {
				return nil, errors.New("jsonb value of an unknown binary version")
			}
			return string(src[1:]), nil
		})
	case oidBytea:
		return prim("BLOB", duckdb.TYPE_BLOB, func(src []byte) (any, error) { return slices.Clone(src), nil })
	case oidUUID:
		return prim("UUID", duckdb.TYPE_UUID, scan(m, oid, func(v pgtype.UUID) (any, error) { u := duckdb.UUID(v.Bytes); return &u, nil }))
	case oidDate:
		return prim("DATE", duckdb.TYPE_DATE, func(src []byte) (any, error) {
			if len(src) != 4 {
				return nil, fmt.Errorf("binary date of %d bytes", len(src))
			}
			switch d := int32(binary.BigEndian.Uint32(src)); d {
			case math.MaxInt32, math.MinInt32:
				return nil, errors.New("date ±infinity: DuckDB's appender takes finite dates only (filter or cast it in the query)")
			default:
				return time.Unix(int64(d)*86_400+pgEpochUnix, 0).UTC(), nil
			}
		})
	case oidTime:
		return prim("TIME", duckdb.TYPE_TIME, scan(m, oid, func(v pgtype.Time) (any, error) {
			return time.UnixMicro(v.Microseconds).UTC(), nil
		}))
	case oidTimestamp:
		return prim("TIMESTAMP", duckdb.TYPE_TIMESTAMP, pgTimestamp)
	case oidTimestamptz:
		return prim("TIMESTAMPTZ", duckdb.TYPE_TIMESTAMP_TZ, pgTimestamp)
	case oidInterval:
		return prim("INTERVAL", duckdb.TYPE_INTERVAL, scan(m, oid, func(v pgtype.Interval) (any, error) {
			return duckdb.Interval{Months: v.Months, Days: v.Days, Micros: v.Microseconds}, nil
		}))
	case oidNumeric:
		// typmod is ((precision << 16) | scale) + 4, or -1 for numeric
		// without precision.
		p, s := (typmod-4)>>16&0xffff, (typmod-4)&0xffff
		if typmod < 4 || p < 1 || p > 38 {
			return prim("DOUBLE", duckdb.TYPE_DOUBLE, scan(m, oid, func(v float64) (any, error) { return v, nil }))
		}
		info, err := duckdb.NewDecimalInfo(uint8(p), uint8(s))
		if err != nil {
			return sourceColumn{}, false, err
		}
		return sourceColumn{duck: fmt.Sprintf("DECIMAL(%d,%d)", p, s), info: info, dec: scan(m, oid, func(v pgtype.Numeric) (any, error) {
			return toDecimal(v, uint8(p), uint8(s))
		})}, true, nil
	}
	return sourceColumn{}, false, nil
}

// pgEpochUnix is the origin of Postgres' binary dates and timestamps,
// 2000-01-01 00:00 UTC, in seconds since the Unix epoch.
const pgEpochUnix = 946_684_800

// pgTimestamp decodes a binary timestamp or timestamptz (microseconds
// since pgEpoch, in UTC for timestamptz) without pgtype's scan plan: it was
// a tenth of the time of a source append.
func pgTimestamp(src []byte) (any, error) {
	if len(src) != 8 {
		return nil, fmt.Errorf("binary timestamp of %d bytes", len(src))
	}
	switch us := int64(binary.BigEndian.Uint64(src)); us {
	case math.MaxInt64, math.MinInt64:
		return nil, errors.New("timestamp ±infinity: DuckDB's appender takes finite timestamps only (filter or cast it in the query)")
	default:
		return time.UnixMicro(us + pgEpochUnix*1_000_000).UTC(), nil
	}
}

// toDecimal converts a numeric to a DECIMAL(p,s) value.
func toDecimal(v pgtype.Numeric, p, s uint8) (any, error) {
	if v.NaN || v.InfinityModifier != pgtype.Finite {
		return nil, fmt.Errorf("numeric %s does not fit DECIMAL(%d,%d)", map[bool]string{true: "NaN", false: "infinity"}[v.NaN], p, s)
	}
	val := new(big.Int).Set(v.Int)
	ten := big.NewInt(10)
	if e := int64(v.Exp) + int64(s); e >= 0 {
		val.Mul(val, new(big.Int).Exp(ten, big.NewInt(e), nil))
	} else {
		var rem big.Int
		val.QuoRem(val, new(big.Int).Exp(ten, big.NewInt(-e), nil), &rem)
		if rem.Sign() != 0 {
			return nil, fmt.Errorf("numeric has more than %d decimals", s)
		}
	}
	return duckdb.Decimal{Width: p, Scale: s, Value: val}, nil
}

// scan is the decoder of a type scanned by pgtype into T and converted.
func scan[T any](m *pgtype.Map, oid uint32, conv func(T) (any, error)) decoder {
	plan := m.PlanScan(oid, pgtype.BinaryFormatCode, new(T))
	return func(src []byte) (any, error) {
		var v T
		if err := plan.Scan(src, &v); err != nil {
			return nil, err
		}
		return conv(v)
	}
}

// listOf is the decoder of a 1-dimensional array of oid whose elements
// elem decodes; NULL elements stay NULL.
func listOf(m *pgtype.Map, oid uint32, elem decoder) decoder {
	return func(src []byte) (any, error) {
		// The binary array: ndim, has-null flag, element oid, then per
		// dimension its length and lower bound, then the elements, each
		// a length (-1: NULL) and its bytes.
		if len(src) < 12 {
			return nil, errors.New("short binary array")
		}
		ndim := int32(binary.BigEndian.Uint32(src))
		switch {
		case ndim == 0:
			return []any{}, nil
		case ndim != 1:
			return nil, fmt.Errorf("an array of %d dimensions: only 1-dimensional arrays map to a DuckDB LIST (unnest or cast it in the query)", ndim)
		case len(src) < 20:
			return nil, errors.New("short binary array")
		}
		n := int(int32(binary.BigEndian.Uint32(src[12:])))
		b := src[20:]
		if n < 0 || n > len(b)/4 { // each element has at least its length
			return nil, errors.New("short binary array")
		}
		out := make([]any, 0, n)
		for range n {
			if len(b) < 4 {
				return nil, errors.New("short binary array")
			}
			l := int32(binary.BigEndian.Uint32(b))
			b = b[4:]
			if l < 0 {
				out = append(out, nil)
				continue
			}
			if int(l) > len(b) {
				return nil, errors.New("short binary array")
			}
			v, err := elem(b[:l])
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			b = b[l:]
		}
		return out, nil
	}
}

// copyReader decodes the binary COPY format (PostgreSQL docs, COPY, Binary
// Format) as pgconn writes its CopyData messages: the 19-byte header, then
// tuples (a field count, then per field a length, -1 for NULL, and its
// bytes), then the trailer (a field count of -1). It calls row for each
// tuple; fields alias the buffer until row returns.
type copyReader struct {
	cols   int
	row    func(fields [][]byte) error
	buf    []byte
	header bool
	done   bool
	fields [][]byte
	err    error // the error row returned
}

// copySignature starts a binary COPY stream.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

func (c *copyReader) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	b := p
	if len(c.buf) > 0 {
		c.buf = append(c.buf, p...)
		b = c.buf
	}
	consumed, err := c.parse(b)
	if err != nil {
		c.err = err
		return 0, err
	}
	rest := b[consumed:]
	c.buf = append(c.buf[:0], rest...)
	return len(p), nil
}

// parse decodes the whole tuples at the start of b and returns how many
// bytes it used.
func (c *copyReader) parse(b []byte) (int, error) {
	off := 0
	if !c.header {
		if len(b) < 19 {
			return 0, nil
		}
		if !slices.Equal(b[:11], copySignature) {
			return 0, errors.New("not a binary COPY stream")
		}
		ext := int(binary.BigEndian.Uint32(b[15:]))
		if len(b) < 19+ext {
			return 0, nil
		}
		off, c.header = 19+ext, true
	}
	for off+2 <= len(b) && !c.done {
		nf := int16(binary.BigEndian.Uint16(b[off:]))
		if nf == -1 {
			c.done = true
			return off + 2, nil
		}
		if int(nf) != c.cols {
			return 0, fmt.Errorf("a COPY tuple of %d fields, %d expected", nf, c.cols)
		}
		p := off + 2
		c.fields = c.fields[:0]
		complete := true
		for range int(nf) {
			if p+4 > len(b) {
				complete = false
				break
			}
			l := int32(binary.BigEndian.Uint32(b[p:]))
			p += 4
			if l < 0 {
				c.fields = append(c.fields, nil)
				continue
			}
			if p+int(l) > len(b) {
				complete = false
				break
			}
			c.fields = append(c.fields, b[p:p+int(l):p+int(l)])
			p += int(l)
		}
		if !complete {
			break
		}
		if err := c.row(c.fields); err != nil {
			return 0, err
		}
		off = p
	}
	return off, nil
}
