package functions

import (
	"context"
	"errors"
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
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	rows, err := pg.Query(ctx, `SELECT concat_ws('|', g, coalesce(small::text, 'NULL'), big::text, neg::text,
		coalesce('[' || array_to_string(arr, ', ', 'NULL') || ']', 'NULL'), s) FROM nums ORDER BY g`)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
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
