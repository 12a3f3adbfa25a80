package functions

import (
	"context"
	"errors"
	"strings"
	"testing"

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
