package snapshot

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/duck"
)

// roundTripColumns are a column of every type create_table accepts (and
// ENUM, which the sql function creates), with the extremes of each; every
// column also gets NULL in the last row.
var roundTripColumns = []struct {
	name, typ string
	vals      []string
}{
	{"bool", "BOOLEAN", []string{"true", "false"}},
	{"i8", "TINYINT", []string{"-128", "127"}},
	{"i16", "SMALLINT", []string{"-32768", "32767"}},
	{"i32", "INTEGER", []string{"-2147483648", "2147483647"}},
	{"i64", "BIGINT", []string{"-9223372036854775808", "9223372036854775807"}},
	{"i128", "HUGEINT", []string{"-170141183460469231731687303715884105728", "170141183460469231731687303715884105727", "2 * 9223372036854775807::HUGEINT + 3"}},
	{"u8", "UTINYINT", []string{"0", "255"}},
	{"u16", "USMALLINT", []string{"0", "65535"}},
	{"u32", "UINTEGER", []string{"0", "4294967295"}},
	{"u64", "UBIGINT", []string{"0", "18446744073709551615"}},
	{"u128", "UHUGEINT", []string{"0", "340282366920938463463374607431768211455", "18446744073709551617"}},
	{"f32", "FLOAT", []string{"'nan'", "'inf'", "'-inf'", "'-0.0'", "3.4028235e38", "-3.4028235e38", "1.4e-45", "0.1"}},
	{"f64", "DOUBLE", []string{"'nan'", "'inf'", "'-inf'", "'-0.0'", "1.7976931348623157e308", "-1.7976931348623157e308", "4.9e-324", "0.1"}},
	{"d4", "DECIMAL(4,1)", []string{"-999.9", "999.9", "0.1"}},
	{"d18", "DECIMAL(18,3)", []string{"-999999999999999.999", "999999999999999.999"}},
	{"d38", "DECIMAL(38,10)", []string{"-9999999999999999999999999999.9999999999", "9999999999999999999999999999.9999999999"}},
	{"s", "VARCHAR", []string{"''", "'a' || chr(0) || 'b'", "'ünï 😀'"}},
	{"bl", "BLOB", []string{"''::BLOB", "'\\x00\\xFF'::BLOB"}},
	{"dt", "DATE", []string{"'5877642-06-25 (BC)'", "'5881580-07-10'", "'infinity'", "'-infinity'"}},
	{"tm", "TIME", []string{"'00:00:00'", "'23:59:59.999999'", "'24:00:00'"}},
	{"tns", "TIME_NS", []string{"'00:00:00'", "'23:59:59.999999999'", "'24:00:00'"}},
	{"ttz", "TIMETZ", []string{"'00:00:00+15:59:59'", "'24:00:00-15:59:59'", "'12:34:56.789012+05:30'"}},
	{"ts", "TIMESTAMP", []string{"'290309-12-22 (BC) 00:00:00'", "'294247-01-10 04:00:54.775806'", "'infinity'", "'-infinity'"}},
	{"ts_s", "TIMESTAMP_S", []string{"'290309-12-22 (BC) 00:00:00'", "'294247-01-10 04:00:54'", "'infinity'", "'-infinity'"}},
	{"ts_ms", "TIMESTAMP_MS", []string{"'290309-12-22 (BC) 00:00:00'", "'294247-01-10 04:00:54.775'", "'infinity'", "'-infinity'"}},
	{"ts_ns", "TIMESTAMP_NS", []string{"'1677-09-22 00:00:00'", "'2262-04-11 23:47:16.854775806'", "'infinity'", "'-infinity'"}},
	{"tstz", "TIMESTAMPTZ", []string{"'290309-12-22 (BC) 00:00:00+00'", "'294247-01-10 04:00:54.775806+00'", "'infinity'", "'-infinity'"}},
	{"iv", "INTERVAL", []string{"INTERVAL 1 MICROSECOND", "-INTERVAL 1 MICROSECOND", "INTERVAL 36 HOUR", "INTERVAL 1 MONTH", "INTERVAL 30 DAY",
		"to_months(2147483647) + to_days(2147483647) + to_microseconds(9223372036854775807)",
		"to_months(-2147483648) + to_days(-2147483648) + to_microseconds(-9223372036854775808)",
		"to_months(-1) + to_days(1) + to_microseconds(-60000001)"}},
	{"id_", "UUID", []string{"'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "'80000000-0000-0000-0000-000000000000'"}},
	{"bt", "BIT", []string{"'0'", "'0101'", "'1' || repeat('0', 100)"}},
	{"bn", "BIGNUM", []string{"'-' || repeat('9', 300)", "'0'", "repeat('7', 400)"}},
	{"js", "JSON", []string{`'{"a":1}'`, "'[1,2]'", `'"x"'`, "'null'"}},
	{"en", "ENUM('a', 'b c', 'it''s')", []string{"'a'", "'b c'", "'it''s'"}},
	{"un", "UNION(i INTEGER, h HUGEINT, s VARCHAR)", []string{"union_value(i := 5)", "union_value(h := 170141183460469231731687303715884105727)", "union_value(s := 'x')"}},
	// No VARIANT: a model's file (storage version before v1.5.0) cannot hold one.
	{"geo", "GEOMETRY", []string{"'POINT(1 2)'", "'POINT Z (1 2 3)'", "'POINT EMPTY'", "'LINESTRING(0.30000000000000004 1e300, -0 5e-324)'",
		"'POLYGON((0 0, 1 0, 1 1, 0 0))'", "'GEOMETRYCOLLECTION EMPTY'", "'POINT ZM (1 2 3 4)'", "'MULTIPOINT((1 2), EMPTY)'"}},
	{"li", "INTEGER[]", []string{"[]", "[1, NULL, 3]", "[-2147483648, 2147483647]"}},
	{"ar", "INTEGER[3]", []string{"[1, NULL, 3]", "[NULL, NULL, NULL]"}},
	{"lh", "HUGEINT[]", []string{"[]", "[170141183460469231731687303715884105727, NULL, -170141183460469231731687303715884105728]"}},
	{"ah", "UHUGEINT[2]", []string{"[340282366920938463463374607431768211455, NULL]"}},
	{"st", "STRUCT(a HUGEINT, b INTEGER[])", []string{"{'a': 170141183460469231731687303715884105727, 'b': [1]}", "{'a': NULL, 'b': NULL}"}},
	{"sq", `STRUCT("x""y" TIMETZ, "a b" BIT, Z INTEGER, "select" ENUM('p', 'q'))`, []string{`{'x"y': '12:00:00+05:00'::TIMETZ, 'a b': '01'::BIT, 'Z': 1, 'select': 'q'}`}},
	{"mp", "MAP(VARCHAR, BIGINT)", []string{"MAP {'k': 1, 'l': NULL}", "MAP {}"}},
	{"mh", "MAP(HUGEINT, BIT)", []string{"MAP {170141183460469231731687303715884105727: '0101'::BIT, 0: NULL}", "MAP {}"}},
	{"ll", "INTEGER[][]", []string{"[[1], [2, 3], NULL, []]"}},
	{"liv", "INTERVAL[]", []string{"[INTERVAL 1 MICROSECOND, NULL, -INTERVAL 36 HOUR]", "[]"}},
	{"aiv", "INTERVAL[2][2]", []string{"[[INTERVAL 1 MICROSECOND, NULL], NULL]"}},
	{"siv", "STRUCT(i INTERVAL, h HUGEINT, l INTERVAL[2])", []string{"{'i': INTERVAL 36 HOUR, 'h': 1, 'l': [INTERVAL 1 MONTH, NULL]}", "{'i': NULL, 'h': NULL, 'l': NULL}"}},
	{"miv", "MAP(VARCHAR, INTERVAL[])", []string{"MAP {'a': [INTERVAL 30 DAY, INTERVAL 1 MONTH], 'b': NULL}", "MAP {}"}},
	{"uiv", `UNION(i INTERVAL, t TIMETZ, "tag" INTEGER)`, []string{"union_value(i := INTERVAL 36 HOUR)", "union_value(t := '12:00:00+05:00'::TIMETZ)", `union_value("tag" := 3)`}},
	{"deep", "STRUCT(m MAP(VARCHAR, STRUCT(a UHUGEINT[2], e ENUM('x', 'y'))), u UNION(b BIT, n INTEGER))[]",
		[]string{"[{'m': MAP {'k': {'a': [340282366920938463463374607431768211455::UHUGEINT, 0], 'e': 'y'}}, 'u': union_value(b := '1'::BIT)}, NULL]"}},
}

// TestExportParquetRoundTripsEveryType exports a table with a column of
// every type and checks that read_parquet with each column's restoring
// expression gives back the same table: the same types, the same values
// (EXCEPT ALL both ways, also on each column's text, which tells -0.0
// from 0.0, an offset from another, 36 hours from a day and a half) and
// the same row count.
func TestExportParquetRoundTripsEveryType(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	var defs []string
	rows := 0
	for _, c := range roundTripColumns {
		defs = append(defs, duck.Ident(c.name)+" "+c.typ)
		rows = max(rows, len(c.vals)+1)
	}
	if _, err := db.Exec("CREATE TABLE every (id INTEGER, " + strings.Join(defs, ", ") + ")"); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < rows; r++ {
		vals := []string{strconv.Itoa(r)}
		for _, c := range roundTripColumns {
			v := "NULL"
			if r < len(c.vals) {
				v = c.vals[r]
			}
			vals = append(vals, "CAST("+v+" AS "+c.typ+")")
		}
		if _, err := db.Exec("INSERT INTO every VALUES (" + strings.Join(vals, ", ") + ")"); err != nil {
			t.Fatalf("row %d: %v", r, err)
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tables, err := DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	cols := tables[0].Columns
	path := filepath.Join(dir, "every.parquet")
	if _, err := ExportParquet(ctx, conn, "every", cols, "", path); err != nil {
		t.Fatal(err)
	}

	// The recorded Parquet type is what read_parquet returns.
	got := map[string]string{}
	desc, err := conn.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet("+duck.Literal(path)+"))")
	if err != nil {
		t.Fatal(err)
	}
	for desc.Next() {
		var n, typ string
		if err := desc.Scan(&n, &typ); err != nil {
			t.Fatal(err)
		}
		got[n] = typ
	}
	desc.Close()
	restore := make([]string, len(cols))
	for i, c := range cols {
		want := c.Parquet
		if want == "" {
			want = c.Type
		}
		if got[c.Name] != want {
			t.Errorf("column %s %s: read_parquet returns %s, the column records %q", c.Name, c.Type, got[c.Name], c.Parquet)
		}
		restore[i] = duck.Ident(c.Name)
		if c.Encoding != "" {
			_, expr, ok := strings.Cut(c.Encoding, "; ")
			if !ok {
				t.Fatalf("column %s: encoding %q has no \"; <expression>\"", c.Name, c.Encoding)
			}
			restore[i] = expr + " AS " + duck.Ident(c.Name)
		}
	}
	if list := RestoreList(cols); list != strings.Join(restore, ", ") {
		t.Errorf("RestoreList = %s\nwant %s", list, strings.Join(restore, ", "))
	}
	if _, err := conn.ExecContext(ctx, "CREATE TABLE back AS SELECT "+strings.Join(restore, ", ")+" FROM read_parquet("+duck.Literal(path)+")"); err != nil {
		t.Fatalf("restore: %v", err)
	}

	back, err := DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tables[0].Columns, back[0].Columns); diff != "" || back[0].Name != "back" {
		t.Errorf("restored table %s has other columns (-every +back):\n%s", back[0].Name, diff)
	}
	if back[0].Rows != int64(rows) || back[1].Rows != int64(rows) {
		t.Errorf("restored %d rows from %d, want %d", back[0].Rows, back[1].Rows, rows)
	}
	except := func(what, a, b string) {
		t.Helper()
		var n int
		q := "SELECT count(*) FROM (SELECT " + what + " FROM " + a + " EXCEPT ALL SELECT " + what + " FROM " + b + ")"
		if err := conn.QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n != 0 {
			var sample string
			conn.QueryRowContext(ctx, "SELECT string_agg(x, ' | ') FROM (SELECT CAST(("+what+") AS VARCHAR) AS x FROM (SELECT "+what+" FROM "+a+" EXCEPT ALL SELECT "+what+" FROM "+b+"))").Scan(&sample)
			t.Errorf("%d rows of %s in %s are not in %s: %s", n, what, a, b, sample)
		}
	}
	except("*", "every", "back")
	except("*", "back", "every")
	for _, c := range cols {
		text := "id, CAST(" + duck.Ident(c.Name) + " AS VARCHAR)"
		except(text, "every", "back")
		except(text, "back", "every")
	}
}

// TestDescribeRecordsEncodings: the columns describe returns (and so every
// manifest) say how the Parquet archive holds each column.
func TestDescribeRecordsEncodings(t *testing.T) {
	ctx := context.Background()
	db, _ := openModel(t)
	if _, err := db.Exec(`CREATE TABLE t (h HUGEINT, i INTEGER, s STRUCT(a HUGEINT, b INTEGER[]), a INTEGER[2], v INTERVAL)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tables, err := DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{
		{Name: "h", Type: "HUGEINT", Parquet: "VARCHAR", Encoding: `HUGEINT as decimal text; CAST("h" AS HUGEINT)`},
		{Name: "i", Type: "INTEGER"},
		{Name: "s", Type: "STRUCT(a HUGEINT, b INTEGER[])", Parquet: "STRUCT(a VARCHAR, b INTEGER[])",
			Encoding: `HUGEINT as decimal text; CAST("s" AS STRUCT(a HUGEINT, b INTEGER[]))`},
		{Name: "a", Type: "INTEGER[2]", Parquet: "INTEGER[]", Encoding: `fixed-size ARRAY as LIST; CAST("a" AS INTEGER[2])`},
		{Name: "v", Type: "INTERVAL", Parquet: intervalStruct, Encoding: "INTERVAL as " + intervalStruct +
			`; to_months(struct_extract("v", 'months')) + to_days(struct_extract("v", 'days')) + to_microseconds(struct_extract("v", 'micros'))`},
	}
	if diff := cmp.Diff(want, tables[0].Columns); diff != "" {
		t.Errorf("columns (-want +got):\n%s", diff)
	}
}

// TestExportParquetWhere: where chooses the rows.
func TestExportParquetWhere(t *testing.T) {
	ctx := context.Background()
	db, dir := openModel(t)
	if _, err := db.Exec(`CREATE TABLE t (id BIGINT, h HUGEINT); INSERT INTO t SELECT range, range FROM range(30)`); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t.parquet")
	cols := []Column{{Name: "id", Type: "BIGINT"}, {Name: "h", Type: "HUGEINT"}}
	if _, err := ExportParquet(ctx, db, "t", cols, "rowid >= 10 AND rowid < 20", path); err != nil {
		t.Fatal(err)
	}
	var n, lo, hi int64
	if err := db.QueryRow("SELECT count(*), min(CAST(h AS HUGEINT)), max(id) FROM read_parquet("+duck.Literal(path)+")").Scan(&n, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if n != 10 || lo != 10 || hi != 19 {
		t.Errorf("exported %d rows from %d to %d, want 10 from 10 to 19", n, lo, hi)
	}
	if _, err := ExportParquet(ctx, db, "t", nil, "", path); err == nil {
		t.Error("ExportParquet without columns succeeded")
	}
}

// typeStrings are types as duckdb_columns() prints them.
var typeStrings = []string{
	"BIGINT", "DECIMAL(18,3)", "TIME WITH TIME ZONE", "TIMESTAMP WITH TIME ZONE", "INTEGER[]", "INTEGER[3][2]",
	"ENUM('a', 'b c', 'it''s', 'x,y)', 'd\"e')", "GEOMETRY('OGC:CRS84')", "MAP(HUGEINT, BIT)[]",
	`STRUCT("x""y" HUGEINT, Z INTEGER, "select" INTEGER, "a b" ENUM('p', 'q''r'), "(" INTEGER, ")" INTEGER, "," INTEGER)`,
	`UNION("u v" INTEGER, w HUGEINT)`, `STRUCT(" " INTEGER)`, "STRUCT(m MAP(VARCHAR, STRUCT(a UHUGEINT[2], e ENUM('x', 'y'))), u UNION(b BIT, n INTEGER))[]",
	"MAP(VARCHAR, INTERVAL[])", "UNION(i INTERVAL, t TIME WITH TIME ZONE, \"tag\" INTEGER)",
}

func TestParseTypePrintsBack(t *testing.T) {
	for typ, e := range leafEncodings { // Encoding is "<how>; <expression>"
		if strings.Contains(e.how, ";") {
			t.Errorf("the encoding of %s, %q, has a ';'", typ, e.how)
		}
	}
	for _, s := range typeStrings {
		ty, err := parseType(s)
		if err != nil {
			t.Errorf("parseType(%q): %v", s, err)
			continue
		}
		if got := ty.String(); got != s {
			t.Errorf("parseType(%q) prints %q", s, got)
		}
	}
	for _, s := range []string{"", "STRUCT(", "STRUCT()", "STRUCT(a)", "MAP(INTEGER)", "INTEGER[", "INTEGER[x]", "ENUM('a)", "DECIMAL(18,3", "a, b", " INTEGER", "INTEGER)"} {
		if _, err := parseType(s); err == nil {
			t.Errorf("parseType(%q) succeeded", s)
		}
	}
}

// FuzzParseType: parseType reads catalog text, which user-created tables
// shape. It must not panic, what it parses must print back to text that
// parses to the same, and ExportColumns must build expressions for it.
func FuzzParseType(f *testing.F) {
	for _, s := range typeStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ty, err := parseType(s)
		if err != nil {
			return
		}
		printed := ty.String()
		again, err := parseType(printed)
		if err != nil {
			t.Fatalf("parseType(%q) prints %q, which does not parse: %v", s, printed, err)
		}
		if again.String() != printed {
			t.Fatalf("parseType(%q) prints %q, which prints %q", s, printed, again.String())
		}
		if _, _, err := ExportColumns([]Column{{Name: "c", Type: s}}); err != nil {
			t.Fatalf("ExportColumns(%q): %v", s, err)
		}
	})
}

// TestExportParquetVariantAsJSON: a VARIANT (possible in an in-memory
// database, not in a model's file) holding values Parquet's VARIANT lacks
// is exported as JSON text (exact digits) instead of failing the export.
func TestExportParquetVariantAsJSON(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := duck.Open(ctx, "", duck.Options{Threads: 1, AllowedDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE v (x VARIANT); INSERT INTO v VALUES (170141183460469231731687303715884105727::HUGEINT::VARIANT),
		(INTERVAL 1 MICROSECOND::VARIANT), ('{"a":[1,2]}'::JSON::VARIANT), (NULL)`); err != nil {
		t.Fatal(err)
	}
	cols := []Column{{Name: "x", Type: "VARIANT"}}
	path := filepath.Join(dir, "v.parquet")
	if _, err := ExportParquet(ctx, db, "v", cols, "", path); err != nil {
		t.Fatal(err)
	}
	var got []string
	rows, err := db.Query("SELECT coalesce(CAST(x AS VARCHAR), 'NULL') FROM read_parquet(" + duck.Literal(path) + ")")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	want := []string{"170141183460469231731687303715884105727", `"00:00:00.000001"`, `{"a":[1,2]}`, "null"} // a NULL becomes JSON's null: lossy, documented
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON text of the VARIANTs (-want +got):\n%s", diff)
	}
}
