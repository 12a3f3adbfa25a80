package functions

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
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

// sourceTemp is the Arrow view the source's rows are inserted from.
const sourceTemp = "_teatree_source"

// applySource streams the rows of a Postgres source into main.<table>
// through DuckDB's Arrow scan, inside the caller's transaction, creating
// the table from the source's columns when it is missing.
func applySource(ctx context.Context, env Env, a *appendArgs) (Result, error) {
	env.Tables.Forget() // the source may create the table
	dsn, err := sourceDSN(env, a.Source)
	if err != nil {
		return Result{}, err
	}
	t, exists, err := lookupTable(ctx, env.Conn, a.Table)
	if err != nil {
		return Result{}, dbError("look up table "+a.Table, err)
	}
	if !exists && a.Create != nil && !*a.Create {
		return Result{}, invalid("table %q does not exist and create is false: create it first (create_table), or leave create out to create it from the source's columns", a.Table)
	}
	r, err := openSource(ctx, a.Source, dsn)
	if err != nil {
		return Result{}, err
	}
	defer r.close(ctx)
	target := a.Table
	if exists {
		target = t.Name
		if err := matchColumns(r.what, t, r.fileColumns()); err != nil {
			return Result{}, err
		}
	} else {
		defs := make([]string, len(r.cols))
		for i, c := range r.cols {
			defs[i] = duck.Ident(c.name) + " " + c.duck
		}
		if _, err := env.Conn.ExecContext(ctx, "CREATE TABLE "+qualified(a.Table)+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return Result{}, dbError("create table "+a.Table+" from "+r.what, err)
		}
	}
	n, err := r.insert(ctx, env, "INSERT INTO "+qualified(target)+" BY NAME SELECT * FROM "+sourceTemp)
	if err != nil {
		return Result{}, err
	}
	return Result{Tables: []string{target}, Rows: n, Appended: true}, nil
}

// sourceDSN is the DSN of the db-manager's source s names, or an error
// naming the sources it knows.
func sourceDSN(env Env, s *sourceRef) (string, error) {
	if dsn, ok := env.Sources[s.Name]; ok {
		return dsn, nil
	}
	known := make([]string, 0, len(env.Sources))
	for n := range env.Sources {
		known = append(known, n)
	}
	slices.Sort(known)
	if len(known) == 0 {
		return "", invalid("unknown source %s: this db-manager has no sources configured (TEATREE_SOURCE_%s=postgres://… or --sources FILE)", model.Quote(s.Name), strings.ToUpper(s.Name))
	}
	return "", invalid("unknown source %s: this db-manager knows %s", model.Quote(s.Name), strings.Join(known, ", "))
}

// readSource is a source being read: its connection, in a read-only,
// repeatable-read transaction, and its query's columns.
type readSource struct {
	ref       *sourceRef
	dsn, what string
	q         string // the query
	pg        *pgx.Conn
	tx        pgx.Tx // split may replace it
	cols      []sourceColumn
}

// openSource connects to the source at dsn and prepares its query (one
// statement that returns rows, with no parameters: the extended protocol
// refuses more than one statement), which gives the column types; the
// caller closes it.
func openSource(ctx context.Context, s *sourceRef, dsn string) (*readSource, error) {
	r := &readSource{ref: s, dsn: dsn, what: "source " + s.Name, q: s.query()}
	pg, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", r.what, err)
	}
	r.pg = pg
	if r.tx, err = pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}); err != nil {
		pg.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%s: begin: %w", r.what, err)
	}
	if err := r.prepare(ctx); err != nil {
		r.close(ctx)
		return nil, err
	}
	return r, nil
}

func (r *readSource) prepare(ctx context.Context) error {
	sd, err := r.pg.PgConn().Prepare(ctx, "", r.q, nil)
	if err != nil {
		return sourceError(r.what, "prepare the query", err)
	}
	if len(sd.ParamOIDs) > 0 {
		return invalid("%s: the query has %d parameters ($1…): write the values into it", r.what, len(sd.ParamOIDs))
	}
	if len(sd.Fields) == 0 {
		return invalid("%s: the query returns no columns: give a SELECT", r.what)
	}
	if r.cols, err = sourceColumns(ctx, r.pg, r.what, sd.Fields); err != nil {
		return err
	}
	return checkFileColumns(r.what, r.fileColumns())
}

// close ends the source's transaction and closes its connection.
func (r *readSource) close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	r.tx.Rollback(ctx)
	r.pg.Close(ctx)
}

// fileColumns are the source's columns as a file's would be.
func (r *readSource) fileColumns() []column {
	cols := make([]column, len(r.cols))
	for i, c := range r.cols {
		cols[i] = column{Name: c.name, Type: c.duck}
	}
	return cols
}

// insert runs insert, a statement that reads the view sourceTemp, while
// the source's rows are copied with COPY (query) TO STDOUT (FORMAT binary)
// and decoded into Arrow batches as they arrive (streamSource): memory
// holds a few record batches, whatever the number of rows.
func (r *readSource) insert(ctx context.Context, env Env, insert string) (int64, error) {
	if !duck.ArrowAvailable {
		return 0, duck.ErrNoArrow
	}
	parts, err := r.split(ctx)
	if err != nil {
		return 0, err
	}
	defer closeParts(ctx, parts)
	return streamSource(ctx, env, parts, r.what, r.cols, insert)
}

// A source's rows reach DuckDB as Arrow record batches of at most
// sourceBatchRows rows or sourceBatchBytes bytes of Postgres values (the
// batch's last row may pass it), with at most sourceBatchesQueued batches
// decoded ahead of DuckDB's scan. Variables, for the tests.
var (
	sourceBatchRows     = 1 << 15
	sourceBatchBytes    = 8 << 20
	sourceBatchesQueued = 2
)

// errSourceStopped ends the COPY of a source when DuckDB's INSERT stopped
// reading it (its own error is the one to report).
var errSourceStopped = errors.New("the insert stopped reading the rows")

// streamSource runs insert, which reads the view sourceTemp, while the
// rows of the parts are copied into it: each part's COPY, its decoding
// and its Arrow batches run on a goroutine of their own, DuckDB's Arrow
// scan and the INSERT on the caller's, with a bounded queue of batches
// between them. It returns the number of rows inserted. An error of the
// source (a bad value, a disconnect) fails the call even where DuckDB
// would have taken the rows it had, and stops the other parts: the
// caller's transaction rolls back, nothing of the source is left.
func streamSource(ctx context.Context, env Env, parts []sourcePart, what string, cols []sourceColumn, insert string) (int64, error) {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: c.name, Type: c.arrow, Nullable: true}
	}
	recs := make(chan arrow.RecordBatch, sourceBatchesQueued)
	st := &sourceStream{schema: arrow.NewSchema(fields, nil), recs: recs}
	st.refs.Store(1)
	defer st.Release()
	release, err := duck.RegisterArrow(env.Conn, st, sourceTemp)
	if err != nil {
		return 0, dbError("scan the rows of "+what, err)
	}
	defer release()
	stop := make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		n       atomic.Int64
		copyErr error // the first part's error
		mu      sync.Mutex
		wg      sync.WaitGroup
	)
	for _, p := range parts {
		wg.Go(func() {
			k, err := copySource(cctx, p, what, cols, st.schema, recs, stop)
			n.Add(k)
			if err == nil {
				return
			}
			mu.Lock()
			if copyErr == nil || errors.Is(copyErr, context.Canceled) && !errors.Is(err, context.Canceled) {
				copyErr = err
			}
			mu.Unlock()
			cancel() // the other parts stop
		})
	}
	go func() {
		wg.Wait()
		st.mu.Lock()
		st.err = copyErr
		st.mu.Unlock()
		close(recs)
	}()
	_, insErr := env.Conn.ExecContext(ctx, insert)
	close(stop)
	for rec := range recs { // until every part is done
		rec.Release()
	}
	switch {
	case copyErr != nil && (insErr == nil || !errors.Is(copyErr, errSourceStopped)):
		return 0, copyErr
	case insErr != nil:
		return 0, dbError("insert the rows of "+what, insErr)
	}
	return n.Load(), nil
}

// A table source of at least sourceSplitPages pages is read in up to
// sourceMaxParts parts at once (no more than GOMAXPROCS), each part a
// range of the table's pages (a TID range scan, `ctid >= '(a,0)' AND
// ctid < '(b,0)'`, PostgreSQL 14 or later) on a connection of its own,
// all in the one snapshot the first connection exports
// (pg_export_snapshot, SET TRANSACTION SNAPSHOT; the approach of DuckDB's
// postgres_scanner and pgcopydb). Variables, for the tests.
var (
	sourceSplitPages int64 = 2048 // 16 MiB of Postgres's default 8 KiB pages per part at least
	sourceMaxParts         = 4
)

// sourcePart is one COPY of a source: the query on its connection (the
// source's own for the first part, one of the part's own for the others);
// from is its first page ("": the whole source), for errors.
type sourcePart struct {
	pg   *pgx.Conn
	q    string
	from string
}

// split returns the parts the source is read in: its query alone on its
// connection, whose transaction is open, unless the source is a table
// large enough to split (see sourceSplitPages). When Postgres refuses to
// export the snapshot (the transaction is then aborted) or another
// connection cannot join it, the source is read in one part, in a new
// transaction if needed.
func (r *readSource) split(ctx context.Context) ([]sourcePart, error) {
	pg, q, what := r.pg, r.q, r.what
	one := []sourcePart{{pg: pg, q: q}}
	parts := min(runtime.GOMAXPROCS(0), sourceMaxParts)
	if r.ref.Table == "" || parts < 2 {
		return one, nil
	}
	var kind string
	var pages, server int64
	if err := pg.QueryRow(ctx, "SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::bigint, current_setting('server_version_num')::bigint FROM pg_class c WHERE c.oid = $1::regclass",
		pgx.Identifier(strings.Split(r.ref.Table, ".")).Sanitize()).Scan(&kind, &pages, &server); err != nil {
		return nil, sourceError(what, "read the table's size", err)
	}
	if kind != "r" && kind != "m" || server < 140000 { // a view, a foreign or partitioned table: no ctid of its own; before 14, no TID range scan
		return one, nil
	}
	if parts = int(min(int64(parts), pages/sourceSplitPages)); parts < 2 {
		return one, nil
	}
	var snap string
	if err := pg.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snap); err != nil {
		r.tx.Rollback(ctx)
		if r.tx, err = pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}); err != nil {
			return nil, fmt.Errorf("%s: begin: %w", what, err)
		}
		return one, nil
	}
	per := pages / int64(parts)
	bound := func(i int) string { return "'(" + strconv.FormatInt(int64(i)*per, 10) + ",0)'::tid" }
	out := make([]sourcePart, 0, parts)
	for i := range parts {
		p := sourcePart{pg: pg, q: q + " WHERE ctid >= " + bound(i), from: strconv.FormatInt(int64(i)*per, 10)}
		if i+1 < parts { // the last part is open-ended
			p.q += " AND ctid < " + bound(i+1)
		}
		if i > 0 {
			c, err := joinSnapshot(ctx, r.dsn, snap)
			if err != nil { // read in one part: the snapshot is the first connection's
				closeParts(ctx, out)
				return one, nil
			}
			p.pg = c
		}
		out = append(out, p)
	}
	return out, nil
}

// joinSnapshot connects to dsn and begins a read-only repeatable-read
// transaction in the exported snapshot snap.
func joinSnapshot(ctx context.Context, dsn, snap string) (*pgx.Conn, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	_, err = c.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	if err == nil {
		_, err = c.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(snap, "'", "''")+"'")
	}
	if err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// closeParts closes the connections of the parts after the first (which
// reads on the source's own connection).
func closeParts(ctx context.Context, parts []sourcePart) {
	for _, p := range parts[min(1, len(parts)):] {
		p.pg.Close(context.WithoutCancel(ctx))
	}
}

// copySource copies the rows of part p, decodes them into record batches
// of schema and sends these on recs until the COPY ends or stop is
// closed. It returns the number of rows decoded.
func copySource(ctx context.Context, p sourcePart, what string, cols []sourceColumn, schema *arrow.Schema, recs chan<- arrow.RecordBatch, stop <-chan struct{}) (int64, error) {
	if p.from != "" {
		what += " (the part from page " + p.from + ")"
	}
	rb := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer rb.Release()
	builders := rb.Fields()
	decs := make([]decoder, len(cols))
	for i, c := range cols {
		decs[i] = c.bind(builders[i]) // the builders are reset, not replaced, by each batch
	}
	var n int64
	rows, size := 0, 0
	rb.Reserve(sourceBatchRows)
	send := func() error {
		rec := rb.NewRecordBatch()
		rb.Reserve(sourceBatchRows)
		rows, size = 0, 0
		select {
		case recs <- rec:
			return nil
		case <-stop:
			rec.Release()
			return errSourceStopped
		}
	}
	w := &copyReader{cols: len(cols), row: func(fields [][]byte) error {
		for i, src := range fields {
			if src == nil {
				builders[i].AppendNull()
				continue
			}
			if err := decs[i](src); err != nil {
				return invalid("%s: column %s row %d: %v", what, duck.Ident(cols[i].name), n+1, err)
			}
			size += len(src)
		}
		n++
		if rows++; rows >= sourceBatchRows || size >= sourceBatchBytes {
			return send()
		}
		return nil
	}}
	_, err := p.pg.PgConn().CopyTo(ctx, w, "COPY (\n"+p.q+"\n) TO STDOUT (FORMAT binary)")
	if err == nil && !w.done {
		err = errors.New("the COPY ended without its trailer")
	}
	if err == nil && rows > 0 {
		if err = send(); err != nil {
			return n, err
		}
	}
	if err != nil {
		var pe *pgconn.PgError
		if w.err != nil {
			return n, w.err
		}
		if errors.As(err, &pe) {
			return n, sourceError(what, fmt.Sprintf("copy after %d rows", n), err)
		}
		return n, fmt.Errorf("%s: copy after %d rows: %w", what, n, err)
	}
	return n, nil
}

// sourceStream is the array.RecordReader DuckDB's Arrow scan reads a
// source through: the batches copySource sends, then its error. DuckDB
// calls it from its threads, one call at a time.
type sourceStream struct {
	refs   atomic.Int64
	schema *arrow.Schema
	recs   <-chan arrow.RecordBatch
	mu     sync.Mutex // cur and err
	cur    arrow.RecordBatch
	err    error
}

func (s *sourceStream) Retain() { s.refs.Add(1) }

func (s *sourceStream) Release() {
	if s.refs.Add(-1) == 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cur != nil {
			s.cur.Release()
			s.cur = nil
		}
	}
}

func (s *sourceStream) Schema() *arrow.Schema { return s.schema }

func (s *sourceStream) Next() bool {
	s.mu.Lock()
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	s.mu.Unlock()
	rec, ok := <-s.recs
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = rec
	return ok
}

func (s *sourceStream) RecordBatch() arrow.RecordBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Record is RecordBatch (the interface's deprecated name).
func (s *sourceStream) Record() arrow.RecordBatch { return s.RecordBatch() }

func (s *sourceStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
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
// Arrow type DuckDB's Arrow scan reads it as, and the binder of its
// decoder to the column's Arrow builder.
type sourceColumn struct {
	name  string
	duck  string
	arrow arrow.DataType
	bind  binder
}

// binder returns the decoder that appends the binary Postgres values of
// a column to b, a builder of the column's Arrow type.
type binder func(b array.Builder) decoder

// decoder appends one binary Postgres value (never NULL) to its builder.
// An error fails the request: the batch being built is dropped with it.
type decoder func(src []byte) error

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

// mapType maps Postgres type oid (with type modifier typmod) to DuckDB,
// through the Arrow type its values are built as:
//
//	bool → BOOLEAN; smallint, integer, bigint → SMALLINT, INTEGER, BIGINT;
//	oid → UINTEGER; real, double precision → FLOAT, DOUBLE;
//	numeric(p,s) with p ≤ 38 → DECIMAL(p,s) (Arrow decimal128), other
//	numeric → DOUBLE (as DuckDB's postgres_scanner does); text,
//	varchar(n), char(n), name → VARCHAR; bytea → BLOB; date → DATE
//	(date32); time → TIME (time64 µs); timestamp → TIMESTAMP (timestamp
//	µs); timestamptz → TIMESTAMPTZ (timestamp µs, UTC); interval →
//	INTERVAL (month_day_nano); uuid → UUID (arrow.uuid); json, jsonb →
//	JSON (a string, cast by the INSERT); a 1-dimensional array of any of
//	these (but json) → a LIST of it.
//
// ok is false for any other type. Values teatree does not carry fail the
// row with an error naming the column: infinite dates and timestamps,
// numeric NaN or infinity into a DECIMAL, intervals of more than ±292
// years of time, arrays of more than one dimension.
func mapType(m *pgtype.Map, oid uint32, typmod int32) (sourceColumn, bool, error) {
	if elem, ok := arrayElem[oid]; ok {
		c, ok, err := mapType(m, elem, typmod)
		if !ok || err != nil {
			return c, ok, err
		}
		return sourceColumn{duck: c.duck + "[]", arrow: arrow.ListOf(c.arrow), bind: listOf(c.bind)}, true, nil
	}
	col := func(ddl string, t arrow.DataType, bind binder) (sourceColumn, bool, error) {
		return sourceColumn{duck: ddl, arrow: t, bind: bind}, true, nil
	}
	switch oid {
	case oidBool:
		return col("BOOLEAN", arrow.FixedWidthTypes.Boolean, fixed(1, func(b *array.BooleanBuilder, src []byte) { b.Append(src[0] != 0) }))
	case oidInt2:
		return col("SMALLINT", arrow.PrimitiveTypes.Int16, fixed(2, func(b *array.Int16Builder, src []byte) { b.Append(int16(binary.BigEndian.Uint16(src))) }))
	case oidInt4:
		return col("INTEGER", arrow.PrimitiveTypes.Int32, fixed(4, func(b *array.Int32Builder, src []byte) { b.Append(int32(binary.BigEndian.Uint32(src))) }))
	case oidInt8:
		return col("BIGINT", arrow.PrimitiveTypes.Int64, fixed(8, func(b *array.Int64Builder, src []byte) { b.Append(int64(binary.BigEndian.Uint64(src))) }))
	case oidOID:
		return col("UINTEGER", arrow.PrimitiveTypes.Uint32, fixed(4, func(b *array.Uint32Builder, src []byte) { b.Append(binary.BigEndian.Uint32(src)) }))
	case oidFloat4:
		return col("FLOAT", arrow.PrimitiveTypes.Float32, fixed(4, func(b *array.Float32Builder, src []byte) {
			b.Append(math.Float32frombits(binary.BigEndian.Uint32(src)))
		}))
	case oidFloat8:
		return col("DOUBLE", arrow.PrimitiveTypes.Float64, fixed(8, func(b *array.Float64Builder, src []byte) {
			b.Append(math.Float64frombits(binary.BigEndian.Uint64(src)))
		}))
	case oidText, oidVarchar, oidBPChar, oidName:
		// The binary form of text types is their UTF-8 bytes.
		return col("VARCHAR", arrow.BinaryTypes.String, bytesOf())
	case oidJSON:
		return col("JSON", arrow.BinaryTypes.String, bytesOf())
	case oidJSONB:
		// Binary jsonb is a version byte (1) and the JSON text.
		return col("JSON", arrow.BinaryTypes.String, func(ab array.Builder) decoder {
			b := ab.(*array.StringBuilder)
			return func(src []byte) error {
				if len(src) == 0 || src[0] != 1 {
					return errors.New("jsonb value of an unknown binary version")
				}
				b.BinaryBuilder.Append(src[1:])
				return nil
			}
		})
	case oidBytea:
		return col("BLOB", arrow.BinaryTypes.Binary, bytesOf())
	case oidUUID:
		return col("UUID", extensions.NewUUIDType(), func(ab array.Builder) decoder {
			b := ab.(*extensions.UUIDBuilder)
			return func(src []byte) error {
				if len(src) != 16 {
					return fmt.Errorf("binary uuid of %d bytes", len(src))
				}
				b.AppendBytes([16]byte(src))
				return nil
			}
		})
	case oidDate:
		return col("DATE", arrow.FixedWidthTypes.Date32, fallible(4, func(b *array.Date32Builder, src []byte) error {
			switch d := int32(binary.BigEndian.Uint32(src)); d {
			case math.MaxInt32, math.MinInt32:
				return errors.New("date ±infinity: teatree takes finite dates only (filter or cast it in the query)")
			default:
				b.Append(arrow.Date32(d + pgEpochDays))
				return nil
			}
		}))
	case oidTime:
		return col("TIME", arrow.FixedWidthTypes.Time64us, fixed(8, func(b *array.Time64Builder, src []byte) {
			b.Append(arrow.Time64(binary.BigEndian.Uint64(src)))
		}))
	case oidTimestamp:
		return col("TIMESTAMP", &arrow.TimestampType{Unit: arrow.Microsecond}, pgTimestamp)
	case oidTimestamptz:
		return col("TIMESTAMPTZ", &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, pgTimestamp)
	case oidInterval:
		// Binary interval: microseconds (int64), days, months (int32).
		return col("INTERVAL", arrow.FixedWidthTypes.MonthDayNanoInterval, fallible(16, func(b *array.MonthDayNanoIntervalBuilder, src []byte) error {
			us := int64(binary.BigEndian.Uint64(src))
			if us > math.MaxInt64/1000 || us < math.MinInt64/1000 {
				return errors.New("an interval of more than ±292 years of hours, minutes and seconds: teatree carries it in nanoseconds (cast it in the query)")
			}
			b.Append(arrow.MonthDayNanoInterval{Months: int32(binary.BigEndian.Uint32(src[12:])), Days: int32(binary.BigEndian.Uint32(src[8:])), Nanoseconds: us * 1000})
			return nil
		}))
	case oidNumeric:
		// typmod is ((precision << 16) | scale) + 4, or -1 for numeric
		// without precision.
		p, s := (typmod-4)>>16&0xffff, (typmod-4)&0xffff
		if typmod < 4 || p < 1 || p > 38 {
			return col("DOUBLE", arrow.PrimitiveTypes.Float64, scan(m, oid, func(b *array.Float64Builder, v float64) error { b.Append(v); return nil }))
		}
		slow := scan(m, oid, func(b *array.Decimal128Builder, v pgtype.Numeric) error {
			d, err := toDecimal(v, p, s)
			if err == nil {
				b.Append(d)
			}
			return err
		})
		return col(fmt.Sprintf("DECIMAL(%d,%d)", p, s), &arrow.Decimal128Type{Precision: p, Scale: s}, func(ab array.Builder) decoder {
			b, slowDec := ab.(*array.Decimal128Builder), slow(ab)
			return func(src []byte) error {
				d, ok, err := smallNumeric(src, p, s)
				switch {
				case err != nil:
					return err
				case !ok:
					return slowDec(src)
				}
				b.Append(d)
				return nil
			}
		})
	}
	return sourceColumn{}, false, nil
}

// pgEpochUnix is the origin of Postgres' binary dates and timestamps,
// 2000-01-01 00:00 UTC, in seconds since the Unix epoch; pgEpochDays the
// same in days.
const (
	pgEpochUnix = 946_684_800
	pgEpochDays = pgEpochUnix / 86_400
)

// fixed is the binder of a type of size bytes whose decoding cannot fail.
func fixed[B array.Builder](size int, put func(b B, src []byte)) binder {
	return fallible(size, func(b B, src []byte) error { put(b, src); return nil })
}

// fallible is the binder of a type of size bytes.
func fallible[B array.Builder](size int, put func(b B, src []byte) error) binder {
	return func(ab array.Builder) decoder {
		b := ab.(B)
		return func(src []byte) error {
			if len(src) != size {
				return fmt.Errorf("a binary value of %d bytes, %d expected", len(src), size)
			}
			return put(b, src)
		}
	}
}

// bytesOf is the binder of the text and bytea types, appended as they
// are to a string or binary builder.
func bytesOf() binder {
	return func(ab array.Builder) decoder {
		var b *array.BinaryBuilder
		switch t := ab.(type) {
		case *array.StringBuilder:
			b = t.BinaryBuilder
		case *array.BinaryBuilder:
			b = t
		}
		return func(src []byte) error { b.Append(src); return nil }
	}
}

// pgTimestamp decodes a binary timestamp or timestamptz (microseconds
// since 2000-01-01, in UTC for timestamptz) into microseconds since the
// Unix epoch.
var pgTimestamp = fallible(8, func(b *array.TimestampBuilder, src []byte) error {
	switch us := int64(binary.BigEndian.Uint64(src)); {
	case us == math.MaxInt64 || us == math.MinInt64:
		return errors.New("timestamp ±infinity: teatree takes finite timestamps only (filter or cast it in the query)")
	case us > math.MaxInt64-pgEpochUnix*1_000_000:
		return errors.New("timestamp beyond DuckDB's range (the year 294246)")
	default:
		b.Append(arrow.Timestamp(us + pgEpochUnix*1_000_000))
		return nil
	}
})

// toDecimal converts a numeric to the unscaled 128-bit value of a
// DECIMAL(p,s).
func toDecimal(v pgtype.Numeric, p, s int32) (decimal128.Num, error) {
	if v.NaN || v.InfinityModifier != pgtype.Finite {
		return decimal128.Num{}, fmt.Errorf("numeric %s does not fit DECIMAL(%d,%d)", map[bool]string{true: "NaN", false: "infinity"}[v.NaN], p, s)
	}
	val := new(big.Int).Set(v.Int)
	ten := big.NewInt(10)
	if e := int64(v.Exp) + int64(s); e >= 0 {
		val.Mul(val, new(big.Int).Exp(ten, big.NewInt(e), nil))
	} else {
		var rem big.Int
		val.QuoRem(val, new(big.Int).Exp(ten, big.NewInt(-e), nil), &rem)
		if rem.Sign() != 0 {
			return decimal128.Num{}, fmt.Errorf("numeric has more than %d decimals", s)
		}
	}
	d := decimal128.FromBigInt(val)
	if !d.FitsInPrecision(p) {
		return decimal128.Num{}, fmt.Errorf("numeric has more than %d digits", p)
	}
	return d, nil
}

// smallNumeric decodes the binary numerics whose unscaled DECIMAL(p,s)
// value fits an int64 and has at most 4 base-10000 digits, without
// math/big (toDecimal took two thirds of the decoding of a table with a
// numeric column); ok is false for the others (NaN and infinity too),
// which toDecimal converts. The binary numeric: the number of digits,
// the weight of the first (a power of 10000), the sign, the display
// scale, then the digits (int16 each, 0 to 9999).
func smallNumeric(src []byte, p, s int32) (d decimal128.Num, ok bool, err error) {
	if len(src) < 8 {
		return d, false, nil
	}
	nd := int(binary.BigEndian.Uint16(src))
	weight := int(int16(binary.BigEndian.Uint16(src[2:])))
	sign := binary.BigEndian.Uint16(src[4:])
	if nd > 4 || len(src) != 8+2*nd || (sign != 0 && sign != 0x4000) {
		return d, false, nil
	}
	var v int64
	for i := range nd {
		g := binary.BigEndian.Uint16(src[8+2*i:])
		if g > 9999 {
			return d, false, nil
		}
		v = v*10000 + int64(g)
	}
	// Digits beyond the display scale (never sent by Postgres) are
	// toDecimal's: pgtype truncates them.
	for extra, r := 4*(nd-weight-1)-int(binary.BigEndian.Uint16(src[6:])), v; extra > 0 && r != 0; extra-- {
		if r%10 != 0 {
			return d, false, nil
		}
		r /= 10
	}
	// The value is v × 10000^(weight-nd+1); unscaled, × 10^s more.
	for e := 4*(weight-nd+1) + int(s); e != 0 && v != 0; {
		if e > 0 {
			if v > math.MaxInt64/10 {
				return d, false, nil
			}
			v, e = v*10, e-1
			continue
		}
		if v%10 != 0 {
			return d, false, nil // more decimals than s: toDecimal's error
		}
		v, e = v/10, e+1
	}
	if sign == 0x4000 {
		v = -v
	}
	d = decimal128.FromI64(v)
	if !d.FitsInPrecision(p) {
		return d, false, fmt.Errorf("numeric has more than %d digits", p)
	}
	return d, true, nil
}

// scan is the binder of a type scanned by pgtype into T and appended by
// put.
func scan[B array.Builder, T any](m *pgtype.Map, oid uint32, put func(b B, v T) error) binder {
	plan := m.PlanScan(oid, pgtype.BinaryFormatCode, new(T))
	return func(ab array.Builder) decoder {
		b := ab.(B)
		return func(src []byte) error {
			var v T
			if err := plan.Scan(src, &v); err != nil {
				return err
			}
			return put(b, v)
		}
	}
}

// listOf is the binder of a 1-dimensional array whose elements elem
// binds; NULL elements stay NULL.
func listOf(elem binder) binder {
	return func(ab array.Builder) decoder {
		b := ab.(*array.ListBuilder)
		vb := b.ValueBuilder()
		dec := elem(vb)
		return func(src []byte) error {
			// The binary array: ndim, has-null flag, element oid, then per
			// dimension its length and lower bound, then the elements, each
			// a length (-1: NULL) and its bytes.
			if len(src) < 12 {
				return errors.New("short binary array")
			}
			ndim := int32(binary.BigEndian.Uint32(src))
			switch {
			case ndim == 0:
				b.Append(true)
				return nil
			case ndim != 1:
				return fmt.Errorf("an array of %d dimensions: only 1-dimensional arrays map to a DuckDB LIST (unnest or cast it in the query)", ndim)
			case len(src) < 20:
				return errors.New("short binary array")
			}
			n := int(int32(binary.BigEndian.Uint32(src[12:])))
			e := src[20:]
			if n < 0 || n > len(e)/4 { // each element has at least its length
				return errors.New("short binary array")
			}
			b.Append(true)
			for range n {
				if len(e) < 4 {
					return errors.New("short binary array")
				}
				l := int32(binary.BigEndian.Uint32(e))
				e = e[4:]
				if l < 0 {
					vb.AppendNull()
					continue
				}
				if int(l) > len(e) {
					return errors.New("short binary array")
				}
				if err := dec(e[:l]); err != nil {
					return err
				}
				e = e[l:]
			}
			return nil
		}
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
