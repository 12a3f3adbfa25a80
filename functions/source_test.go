package functions

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/model"
)

// pgSource creates a Postgres database for the test, runs setup in it and
// returns its URL.
func pgSource(t *testing.T, setup string) string {
	t.Helper()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, setup); err != nil {
		t.Fatalf("setup: %v", err)
	}
	return url
}

// pgRows runs q, one text column, in the Postgres database at url.
func pgRows(t *testing.T, url, q string) []string {
	t.Helper()
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	rows, err := pg.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const allTypes = `
CREATE TABLE alltypes (
	i2 smallint, i4 integer, i8 bigint, n numeric(12,3), nbig numeric, r real, d double precision,
	t text, vc varchar(10), c char(3), b boolean, dt date, ts timestamp, tstz timestamptz,
	iv interval, u uuid, jb jsonb, j json, by bytea, ai integer[], at text[], tm time, o oid
);
INSERT INTO alltypes VALUES
	(-32768, -2147483648, -9223372036854775808, -123456789.125, 12345678901234567890.5, 1.5, -2.25,
	 'tea ☕', 'cup', 'ab', true, '2026-01-31', '2026-01-31 12:34:56.789012', '2026-01-31 12:34:56+02',
	 '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b":null}',
	 '\xdeadbeef', '{1,NULL,3}', '{"x","y z",NULL}', '23:59:59.5', 4294967295),
	(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
	(32767, 0, 9223372036854775807, 0.001, 'NaN', 'Infinity', 1e300, '', '', '   ', false, '0001-01-01', '1970-01-01', '1970-01-01 00:00:00+00',
	 '-1 days', '00000000-0000-0000-0000-000000000000', '[]', '"s"', '', '{}', '{}', '00:00', 0);
`

// TestAppendFromPostgresTypes: every common Postgres type round-trips
// from a real Postgres into a new DuckDB table with its mapped type, NULLs
// included, and a second append into the (now existing) table from a
// query adds the same rows again.
func TestAppendFromPostgresTypes(t *testing.T) {
	m := newModel(t)
	m.sources = map[string]string{"crm": pgSource(t, allTypes)}
	if res := m.mustApply("append", `{"table":"t","source":{"name":"crm","table":"alltypes"}}`); res.Rows != 3 || !cmp.Equal(res.Tables, []string{"t"}) {
		t.Fatalf("append: %+v", res)
	}
	types := m.rows("SELECT column_name, column_type FROM (DESCRIBE t)")
	want := []string{"i2|SMALLINT", "i4|INTEGER", "i8|BIGINT", "n|DECIMAL(12,3)", "nbig|DOUBLE", "r|FLOAT", "d|DOUBLE",
		"t|VARCHAR", "vc|VARCHAR", "c|VARCHAR", "b|BOOLEAN", "dt|DATE", "ts|TIMESTAMP", "tstz|TIMESTAMP WITH TIME ZONE",
		"iv|INTERVAL", "u|UUID", "jb|JSON", "j|JSON", "by|BLOB", "ai|INTEGER[]", "at|VARCHAR[]", "tm|TIME", "o|UINTEGER"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("column types (-want +got):\n%s", diff)
	}
	got := m.rows(`SELECT i2, i4, i8, n::VARCHAR, nbig, r, d, t, vc, c, b, dt::VARCHAR, ts::VARCHAR, tstz::VARCHAR,
		iv::VARCHAR, u::VARCHAR, jb::VARCHAR, j::VARCHAR, hex("by"), ai::VARCHAR, "at"::VARCHAR, tm::VARCHAR, o FROM t ORDER BY i8 NULLS LAST`)
	wantRows := []string{
		"-32768|-2147483648|-9223372036854775808|-123456789.125|1.2345678901234567e+19|1.5|-2.25|tea ☕|cup|ab |true|2026-01-31|2026-01-31 12:34:56.789012|2026-01-31 10:34:56+00|1 year 2 months 3 days 04:05:06.7|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{\"a\": [1, 2]}|{\"b\":null}|DEADBEEF|[1, NULL, 3]|[x, y z, NULL]|23:59:59.5|4294967295",
		"32767|0|9223372036854775807|0.001|NaN|+Inf|1e+300|||   |false|0001-01-01|1970-01-01 00:00:00|1970-01-01 00:00:00+00|-1 day|00000000-0000-0000-0000-000000000000|[]|\"s\"||[]|[]|00:00:00|0",
		"NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
	}
	if diff := cmp.Diff(wantRows, got); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	// Into the existing table, from a query, columns in another order.
	if res := m.mustApply("append", `{"table":"t","source":{"name":"crm","query":"SELECT o, tm, at, ai, by, j, jb, u, iv, tstz, ts, dt, b, c, vc, t, d, r, nbig, n, i8, i4, i2 FROM alltypes WHERE i2 IS NOT NULL;"}}`); res.Rows != 2 {
		t.Fatalf("append query: %+v", res)
	}
	if got := m.rows("SELECT count(*), count(DISTINCT u) FROM t"); !cmp.Equal(got, []string{"5|2"}) {
		t.Errorf("after the second append: %v", got)
	}
}

// TestAppendFromPostgresRefusals: an unknown source, a type teatree does
// not map, values DuckDB cannot hold, a query that writes and bad SQL
// fail the request with an error wrapping model.ErrInvalid that names the
// source and the column, and leave nothing behind.
func TestAppendFromPostgresRefusals(t *testing.T) {
	m := newModel(t)
	m.sources = map[string]string{"crm": pgSource(t, `
		CREATE TABLE pts (id int, p point);
		INSERT INTO pts VALUES (1, '(1,2)');
		CREATE TABLE k (id int);`)}
	for _, tc := range []struct{ args, want string }{
		{`{"table":"t","source":{"name":"erp","table":"pts"}}`, `unknown source "erp": this db-manager knows crm`},
		{`{"table":"t","source":{"name":"crm","table":"pts"}}`, `column "p" has Postgres type point, which teatree does not map to DuckDB: cast it in the query ("p"::text, say)`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 'infinity'::date AS d"}}`, `column "d" row 1: date ±infinity`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 'NaN'::numeric(5,2) AS n"}}`, `column "n" row 1: numeric NaN does not fit DECIMAL(5,2)`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT ARRAY[[1,2],[3,4]] AS a"}}`, `column "a" row 1: an array of 2 dimensions`},
		{`{"table":"t","source":{"name":"crm","query":"DELETE FROM k RETURNING id"}}`, `read-only transaction`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 1 AS a; SELECT 2 AS b"}}`, `cannot insert multiple commands`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT * FROM nosuch"}}`, `relation "nosuch" does not exist`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 1 AS a, 2 AS A"}}`, `one name to DuckDB`},
	} {
		m.applyErr("append", tc.args, tc.want)
	}
	if got := m.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'"); !cmp.Equal(got, []string{"0"}) {
		t.Errorf("a failed append left table t behind: %v", got)
	}
	// Validation needs no db-manager: these are refused before any connection.
	for _, tc := range []struct{ args, want string }{
		{`{"table":"t","source":{"name":"CRM","table":"k"}}`, "source name"},
		{`{"table":"t","source":{"name":"crm"}}`, "give query"},
		{`{"table":"t","source":{"name":"crm","table":"k","query":"SELECT 1"}}`, "not both"},
		{`{"table":"t","source":{"name":"crm","table":"k; DROP TABLE k"}}`, "not a table name"},
		{`{"table":"t","source":{"name":"crm","table":"k"},"rows":[{"a":1}]}`, "not several"},
	} {
		err := validate(registry["append"], []byte(tc.args))
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrInvalid containing %q", tc.args, err, tc.want)
		}
	}
}

// smallBatches makes the source's Arrow batches 7 rows long, one queued,
// for the test: every source of more than 7 rows crosses batches while
// DuckDB's scan reads them.
func smallBatches(t *testing.T) {
	rows, queued := sourceBatchRows, sourceBatchesQueued
	sourceBatchRows, sourceBatchesQueued = 7, 1
	t.Cleanup(func() { sourceBatchRows, sourceBatchesQueued = rows, queued })
}

// TestAppendFromPostgresBatches: 1000 rows of numerics (both decoders:
// the int64 one and math/big's beyond 4 base-10000 digits), arrays and
// NULLs cross many small Arrow batches and arrive as Postgres renders
// them.
func TestAppendFromPostgresBatches(t *testing.T) {
	smallBatches(t)
	m := newModel(t)
	url := pgSource(t, `CREATE TABLE nums AS SELECT g,
		CASE WHEN g % 5 = 0 THEN NULL ELSE (g * 1234.567 - 600000)::numeric(12,3) END AS small,
		(g::numeric * 98765432109876543.21 / 7)::numeric(38,4) AS big,
		(-g / 8.0)::numeric(6,1) AS neg,
		0.0001 * g AS unbounded,
		CASE WHEN g % 3 = 0 THEN NULL ELSE ARRAY[g, NULL, -g] END AS arr,
		'row ' || g AS s
		FROM generate_series(1, 1000) g`)
	m.sources = map[string]string{"crm": url}
	if res := m.mustApply("append", `{"table":"nums","source":{"name":"crm","table":"nums"}}`); res.Rows != 1000 {
		t.Fatalf("append: %+v", res)
	}
	got := m.rows(`SELECT g, small::VARCHAR, big::VARCHAR, neg::VARCHAR, arr::VARCHAR, s FROM nums ORDER BY g`)
	want := pgRows(t, url, `SELECT concat_ws('|', g, coalesce(small::text, 'NULL'), big::text, neg::text,
		coalesce('[' || array_to_string(arr, ', ', 'NULL') || ']', 'NULL'), s) FROM nums ORDER BY g`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rows (-Postgres +DuckDB):\n%s", diff)
	}
	if got := m.rows("SELECT typeof(unbounded), round(sum(unbounded), 4) FROM nums GROUP BY 1"); !cmp.Equal(got, []string{"DOUBLE|50.05"}) {
		t.Errorf("unbounded numeric: %v", got)
	}
}

// TestAppendFromPostgresStreamFails: a source whose server ends the
// connection after hundreds of rows (many batches already in DuckDB's
// table), and an INSERT that DuckDB refuses midway (the COPY still
// running, stopped), each fail the request alone and promptly, with
// their own error, and leave the table as it was.
func TestAppendFromPostgresStreamFails(t *testing.T) {
	smallBatches(t)
	m := newModel(t)
	m.sources = map[string]string{"crm": pgSource(t, `SELECT 1`)}
	m.exec("CREATE TABLE t (n INTEGER CHECK (n < 300), v VARCHAR)")
	m.exec("INSERT INTO t VALUES (0, 'kept')")
	dies := `SELECT g AS n, CASE WHEN g = 250 THEN pg_terminate_backend(pg_backend_pid())::text ELSE 'row ' || g END AS v FROM generate_series(1, 100000) g`
	_, err := m.apply("append", `{"table":"t","source":{"name":"crm","query":"`+dies+`"}}`)
	if err == nil || errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "source crm: copy after") || strings.Contains(err.Error(), "after 0 rows") {
		t.Errorf("disconnect: %v, want a source error that is not the request's fault", err)
	}
	start := time.Now()
	_, err = m.apply("append", `{"table":"t","source":{"name":"crm","query":"SELECT g AS n, 'x' AS v FROM generate_series(1, 5000000) g"}}`)
	if err == nil || !strings.Contains(err.Error(), "CHECK constraint") {
		t.Errorf("refused insert: %v, want DuckDB's CHECK constraint error", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the refused insert took %s: the COPY was not stopped", d)
	}
	if got := m.rows("SELECT count(*), max(n) FROM t"); !cmp.Equal(got, []string{"1|0"}) {
		t.Errorf("t after the failures: %v, want its one row", got)
	}
	// The connection is usable after both.
	if res := m.mustApply("append", `{"table":"t","source":{"name":"crm","query":"SELECT 1 AS n, 'one' AS v"}}`); res.Rows != 1 {
		t.Errorf("append after the failures: %+v", res)
	}
}

// splitParts makes every table source of at least 3 pages be read in 3
// parts, for the test.
func splitParts(t *testing.T) {
	pages, parts, procs := sourceSplitPages, sourceMaxParts, runtime.GOMAXPROCS(4)
	sourceSplitPages, sourceMaxParts = 1, 3
	t.Cleanup(func() { sourceSplitPages, sourceMaxParts = pages, parts; runtime.GOMAXPROCS(procs) })
}

// partsTable is a table of 30000 rows over many pages, with dead row
// versions in its first pages (an update moved rows to its end) and a
// deleted range.
const partsTable = `CREATE TABLE big (g integer, s text) WITH (autovacuum_enabled = false);
	INSERT INTO big SELECT g, repeat('x', 50) || g FROM generate_series(1, 30000) g;
	UPDATE big SET s = 'moved ' || g WHERE g % 100 = 0;
	DELETE FROM big WHERE g BETWEEN 5000 AND 5100;`

// TestSplitSourceSnapshot: a table source split into page ranges reads
// each row exactly once, and every part reads the first connection's
// snapshot: rows another transaction inserts, updates or deletes after
// that snapshot (and before the other parts connect) are seen by no part.
func TestSplitSourceSnapshot(t *testing.T) {
	splitParts(t)
	url := pgSource(t, partsTable)
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	tx, err := pg.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil { // the first connection's snapshot
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Exec(ctx, `INSERT INTO big SELECT g, 'late' FROM generate_series(30001, 31000) g;
		UPDATE big SET s = 'late' WHERE g % 7 = 0; DELETE FROM big WHERE g < 1000`); err != nil {
		t.Fatal(err)
	}
	src := &sourceRef{Name: "crm", Table: "big"}
	r := &readSource{ref: src, dsn: url, what: "source crm", q: src.query(), pg: pg, tx: tx}
	parts, err := r.split(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeParts(ctx, parts)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	var rows, sum int64
	for i, p := range parts {
		var n, s, late int64
		if err := p.pg.QueryRow(ctx, "SELECT count(*), coalesce(sum(g), 0), count(*) FILTER (WHERE s = 'late') FROM ("+p.q+") r").Scan(&n, &s, &late); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if n == 0 || late > 0 {
			t.Errorf("part %d (%s): %d rows, %d of them written after the split", i, p.q, n, late)
		}
		rows, sum = rows+n, sum+s
	}
	const wantRows = 30000 - 101
	wantSum := int64(30000*30001/2 - (5000+5100)*101/2)
	if rows != wantRows || sum != wantSum {
		t.Errorf("the parts hold %d rows summing to %d; want %d summing to %d", rows, sum, wantRows, wantSum)
	}
}

// TestJoinSnapshotRefused: a connection that cannot join the exported
// snapshot is an error (the source is then read in one part), never a
// connection outside it.
func TestJoinSnapshotRefused(t *testing.T) {
	url := pgSource(t, `SELECT 1`)
	c, err := joinSnapshot(context.Background(), url, "00000003-0000001B-1")
	if err == nil || c != nil {
		t.Fatalf("joinSnapshot of a snapshot nobody exported: %v, %v; want an error and no connection", c, err)
	}
}

// TestAppendFromPostgresParts: an append from a table read in parts holds
// the table's rows, each once, as Postgres renders them.
func TestAppendFromPostgresParts(t *testing.T) {
	splitParts(t)
	smallBatches(t)
	m := newModel(t)
	url := pgSource(t, partsTable)
	m.sources = map[string]string{"crm": url}
	if res := m.mustApply("append", `{"table":"big","source":{"name":"crm","table":"big"}}`); res.Rows != 30000-101 {
		t.Fatalf("append: %+v", res)
	}
	got := m.rows(`SELECT g || '|' || s FROM big ORDER BY g`)
	want := pgRows(t, url, `SELECT g || '|' || s FROM big ORDER BY g`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rows (-Postgres +DuckDB):\n%s", diff)
	}
}

// TestUpsertFromPostgres: upsert reads a source as append does: new keys
// are inserted, existing ones updated in the columns the source gives (the
// others keep their values), the values cast to the table's types; a
// source without the whole key, with a column the table lacks, or giving
// a key twice fails the request and changes nothing.
func TestUpsertFromPostgres(t *testing.T) {
	m := newModel(t)
	m.sources = map[string]string{"crm": pgSource(t, `
		CREATE TABLE src (id int, v text);
		INSERT INTO src VALUES (2, 'b2'), (3, 'c');`)}
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"},{"name":"n","type":"INTEGER"}],"primary_key":["id"]}`)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a","n":10},{"id":2,"v":"b","n":20}]}`)
	if res := m.mustApply("upsert", `{"table":"t","source":{"name":"crm","query":"SELECT v AS \"V\", id FROM src"}}`); res.Rows != 2 || res.Appended || !cmp.Equal(res.Tables, []string{"t"}) {
		t.Fatalf("upsert: %+v", res)
	}
	want := []string{"1|a|10", "2|b2|20", "3|c|NULL"}
	if got := m.rows("SELECT id, v, n FROM t ORDER BY id"); !cmp.Equal(got, want) {
		t.Fatalf("after the upsert: %v, want %v", got, want)
	}
	for _, tc := range []struct{ args, want string }{
		{`{"table":"t","source":{"name":"crm","query":"SELECT v FROM src"}}`, `source crm has no column for primary-key column "id" of table t`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT id, v, 1 AS x FROM src"}}`, `source crm column "x" is not a column of table t`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 5 AS id, 'x' AS v UNION ALL SELECT 5, 'y'"}}`, `5: source crm gives this key of table t more than once`},
		{`{"table":"t","source":{"name":"crm","query":"SELECT 'seven' AS id"}}`, `seven`},
		{`{"table":"t","source":{"name":"erp","table":"src"}}`, `unknown source "erp"`},
	} {
		m.applyErr("upsert", tc.args, tc.want)
	}
	if got := m.rows("SELECT id, v, n FROM t ORDER BY id"); !cmp.Equal(got, want) {
		t.Errorf("after the failed upserts: %v, want %v", got, want)
	}
	err := validate(registry["upsert"], []byte(`{"table":"t","rows":[{"id":1}],"source":{"name":"crm","table":"src"}}`))
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("rows and source: %v, want an ErrInvalid", err)
	}
}

// TestUpsertFromPostgresParts: an upsert from a table read in parts
// inserts every row once, and a second one updates them all in place.
func TestUpsertFromPostgresParts(t *testing.T) {
	splitParts(t)
	smallBatches(t)
	m := newModel(t)
	m.sources = map[string]string{"crm": pgSource(t, partsTable)}
	m.mustApply("create_table", `{"table":"big","columns":[{"name":"g","type":"INTEGER"},{"name":"s","type":"VARCHAR"}],"primary_key":["g"]}`)
	for range 2 {
		if res := m.mustApply("upsert", `{"table":"big","source":{"name":"crm","table":"big"}}`); res.Rows != 30000-101 {
			t.Fatalf("upsert: %+v", res)
		}
	}
	if got := m.rows("SELECT count(*), sum(g), count(*) FILTER (WHERE s LIKE 'moved %') FROM big"); !cmp.Equal(got, []string{"29899|449504950|298"}) {
		t.Errorf("after two upserts: %v", got)
	}
}
