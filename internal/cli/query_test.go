package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"

	"github.com/teatree/teatree/duck"
)

// typeCases is every type a DuckDB table can hold, with what teactl query
// prints for it: table is DuckDB's own rendering (the CLI's), csv the same
// field quoted where needed (empty: as table), json the value in to_json's
// form, which reads back into the same type.
var typeCases = []struct {
	typ, lit, table, csv, json string
}{
	{"TINYINT", "-128", "-128", "", "-128"},
	{"SMALLINT", "-32768", "-32768", "", "-32768"},
	{"INTEGER", "-2147483648", "-2147483648", "", "-2147483648"},
	{"BIGINT", "-9223372036854775808", "-9223372036854775808", "", "-9223372036854775808"},
	{"HUGEINT", "-170141183460469231731687303715884105728", "-170141183460469231731687303715884105728", "", "-170141183460469231731687303715884105728"},
	{"UTINYINT", "255", "255", "", "255"},
	{"USMALLINT", "65535", "65535", "", "65535"},
	{"UINTEGER", "4294967295", "4294967295", "", "4294967295"},
	{"UBIGINT", "18446744073709551615", "18446744073709551615", "", "18446744073709551615"},
	{"UHUGEINT", "340282366920938463463374607431768211455", "340282366920938463463374607431768211455", "", "340282366920938463463374607431768211455"},
	{"DECIMAL(2,1)", "1.5", "1.5", "", "1.5"},
	{"DECIMAL(4,1)", "-123.4", "-123.4", "", "-123.4"},
	{"DECIMAL(9,3)", "123456.789", "123456.789", "", "123456.789"},
	{"DECIMAL(18,2)", "1234567890123456.78", "1234567890123456.78", "", "1234567890123456.78"},
	{"DECIMAL(38,10)", "1234567890123456789012345678.0123456789", "1234567890123456789012345678.0123456789", "", "1234567890123456789012345678.0123456789"},
	{"FLOAT", "0.5", "0.5", "", "0.5"},
	{"DOUBLE", "0.1", "0.1", "", "0.1"},
	{"DOUBLE", "'NaN'", "nan", "", `"nan"`},
	{"DOUBLE", "'inf'", "inf", "", `"inf"`},
	{"FLOAT", "'-inf'", "-inf", "", `"-inf"`},
	{"BOOLEAN", "true", "true", "", "true"},
	{"VARCHAR", `'héllo "wörld", 🍵'`, `héllo "wörld", 🍵`, `"héllo ""wörld"", 🍵"`, `"héllo \"wörld\", 🍵"`},
	{"VARCHAR", "''", "", `""`, `""`},
	{"VARCHAR", "'two' || chr(10) || 'lines'", `two\nlines`, "\"two\nlines\"", `"two\nlines"`},
	{"BLOB", `'\x00\xFFab'`, `\x00\xFFab`, "", `"\\x00\\xFFab"`},
	{"DATE", "'2024-02-29'", "2024-02-29", "", `"2024-02-29"`},
	{"TIME", "'13:45:10.123456'", "13:45:10.123456", "", `"13:45:10.123456"`},
	{"TIMETZ", "'13:45:10+02'", "13:45:10+02", "", `"13:45:10+02"`},
	{"TIMESTAMP", "'2024-02-29 13:45:10.123456'", "2024-02-29 13:45:10.123456", "", `"2024-02-29 13:45:10.123456"`},
	{"TIMESTAMPTZ", "'2024-02-29 13:45:10+00'", "2024-02-29 13:45:10+00", "", `"2024-02-29 13:45:10+00"`},
	{"TIMESTAMP_NS", "'2024-02-29 13:45:10.123456789'", "2024-02-29 13:45:10.123456789", "", `"2024-02-29 13:45:10.123456789"`},
	{"TIMESTAMP_MS", "'2024-02-29 13:45:10.123'", "2024-02-29 13:45:10.123", "", `"2024-02-29 13:45:10.123"`},
	{"TIMESTAMP_S", "'2024-02-29 13:45:10'", "2024-02-29 13:45:10", "", `"2024-02-29 13:45:10"`},
	{"INTERVAL", "INTERVAL '2 months 1 day 3 hours'", "2 months 1 day 03:00:00", "", `"2 months 1 day 03:00:00"`},
	{"UUID", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
	{"BIT", "'0101'", "0101", "", `"0101"`},
	{"mood", "'happy'", "happy", "", `"happy"`},
	{"INTEGER[]", "[1, NULL, 3]", "[1, NULL, 3]", `"[1, NULL, 3]"`, "[1,null,3]"},
	{"INTEGER[3]", "[1, 2, 3]", "[1, 2, 3]", `"[1, 2, 3]"`, "[1,2,3]"},
	{"STRUCT(x INTEGER, y INTEGER[])", "{'x': 1, 'y': [2]}", "{'x': 1, 'y': [2]}", `"{'x': 1, 'y': [2]}"`, `{"x":1,"y":[2]}`},
	{"MAP(VARCHAR, INTEGER)", "MAP {'k': 1, 'l': 2}", "{k=1, l=2}", `"{k=1, l=2}"`, `{"k":1,"l":2}`},
	{"UNION(n INTEGER, s VARCHAR)", "union_value(n := 7)", "7", "", `{"n":7}`},
	{"JSON", `'{"a": [1, 2]}'`, `{"a": [1, 2]}`, `"{""a"": [1, 2]}"`, `{"a":[1,2]}`},
	{"INTEGER", "NULL", "NULL", "", "null"},
	{"VARCHAR", "NULL", "NULL", "", "null"},
	{"INTEGER[]", "NULL", "NULL", "", "null"},
}

// TestQueryPrintsEveryType runs each value through writeQuery in every
// format, and reads the JSON back into its type.
func TestQueryPrintsEveryType(t *testing.T) {
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TYPE mood AS ENUM ('sad', 'happy')`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range typeCases {
		q := "SELECT CAST(" + tc.lit + " AS " + tc.typ + ") AS c"
		out := map[string]string{}
		for _, f := range []string{"table", "csv", "json"} {
			var b bytes.Buffer
			if err := writeQuery(ctx, &b, db, q, f); err != nil {
				t.Errorf("%s %s: %v", tc.typ, f, err)
				continue
			}
			out[f] = b.String()
		}
		if want := "c\n" + tc.table + "\n"; out["table"] != want {
			t.Errorf("%s %s table: %q, want %q", tc.typ, tc.lit, out["table"], want)
		}
		csvField := tc.csv
		if csvField == "" {
			csvField = tc.table
			if tc.lit == "NULL" {
				csvField = ""
			}
		}
		if want := "c\n" + csvField + "\n"; out["csv"] != want {
			t.Errorf("%s %s csv: %q, want %q", tc.typ, tc.lit, out["csv"], want)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(out["json"])); err != nil {
			t.Errorf("%s %s json: %v in %q", tc.typ, tc.lit, err, out["json"])
			continue
		}
		if want := `[{"c":` + tc.json + `}]`; compact.String() != want {
			t.Errorf("%s %s json: %s, want %s", tc.typ, tc.lit, compact.String(), want)
		}
		// The JSON value reads back into the same value of the type.
		var rows []map[string]json.RawMessage
		if err := json.Unmarshal([]byte(out["json"]), &rows); err != nil || len(rows) != 1 {
			t.Errorf("%s json: %v", tc.typ, err)
			continue
		}
		if !readsBack(t, db, tc.typ, tc.lit, rows[0]["c"]) {
			t.Errorf("%s %s: json %s does not read back into the value", tc.typ, tc.lit, rows[0]["c"])
		}
	}
}

// readsBack reports whether JSON value v, read as a reader of the JSON
// would (null as NULL, a string's text or a number's digits cast to typ, an
// array or object through DuckDB's JSON cast), is the value lit of typ.
func readsBack(t *testing.T, db *sql.DB, typ, lit string, v json.RawMessage) bool {
	t.Helper()
	var arg any = string(v)
	expr := "CAST(CAST(? AS JSON) AS " + typ + ")"
	switch {
	case string(v) == "null":
		return lit == "NULL"
	case typ == "JSON":
		expr = "json(?)"
		lit = "json(" + lit + ")"
	case v[0] == '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatal(err)
		}
		arg, expr = s, "CAST(CAST(? AS VARCHAR) AS "+typ+")"
	case v[0] != '[' && v[0] != '{':
		expr = "CAST(CAST(? AS VARCHAR) AS " + typ + ")"
	}
	var same bool
	if err := db.QueryRow("SELECT "+expr+" IS NOT DISTINCT FROM CAST("+lit+" AS "+typ+")", arg).Scan(&same); err != nil {
		t.Errorf("%s: read back %s: %v", typ, v, err)
	}
	return same
}

// TestQueryKeepsColumnAndRowOrder: JSON keys in the query's column order,
// rows in its ORDER BY, and a query may end with a semicolon or comment.
func TestQueryKeepsColumnAndRowOrder(t *testing.T) {
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := "SELECT 3 - range AS zeta, 'x' || range AS alpha, NULL AS mid FROM range(3) ORDER BY zeta; -- the end"
	want := map[string]string{
		"table": "zeta  alpha  mid\n1     x2     NULL\n2     x1     NULL\n3     x0     NULL\n",
		"csv":   "zeta,alpha,mid\n1,x2,\n2,x1,\n3,x0,\n",
		"json":  "[\n  {\n    \"zeta\": 1,\n    \"alpha\": \"x2\",\n    \"mid\": null\n  },\n  {\n    \"zeta\": 2,\n    \"alpha\": \"x1\",\n    \"mid\": null\n  },\n  {\n    \"zeta\": 3,\n    \"alpha\": \"x0\",\n    \"mid\": null\n  }\n]\n",
	}
	for f, w := range want {
		var b bytes.Buffer
		if err := writeQuery(ctx, &b, db, q, f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b.String() != w {
			t.Errorf("%s:\n%s\nwant\n%s", f, b.String(), w)
		}
	}
	var b bytes.Buffer
	if err := writeQuery(ctx, &b, db, "SELECT 1 WHERE false", "json"); err != nil || b.String() != "[]\n" {
		t.Errorf("no rows: %q, %v", b.String(), err)
	}
	for q, msg := range map[string]string{"SELECT * FROM nosuch": "nosuch", "SELECT * FROM read_csv('/etc/passwd')": "disabled by configuration"} {
		err := writeQuery(ctx, &b, db, q, "table")
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want one line with %q", q, err, msg)
		}
	}
}

// FuzzFiniteJSON: finiteJSON leaves valid JSON alone, and turns DuckDB's
// non-finite float tokens into JSON strings without touching strings.
func FuzzFiniteJSON(f *testing.F) {
	for _, s := range []string{`{"a":NaN,"b":[Infinity,-Infinity],"c":"NaN \" Infinity"}`, `{"x":1}`, `"\\"`, `[NaN`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := finiteJSON([]byte(s))
		if json.Valid([]byte(s)) && string(out) != s {
			t.Fatalf("valid JSON %q changed to %q", s, out)
		}
		// Without strings every token is a value: replaced, it is JSON.
		zeroed := strings.NewReplacer("-Infinity", `"x"`, "Infinity", `"x"`, "NaN", `"x"`).Replace(s)
		if !strings.Contains(s, `"`) && json.Valid([]byte(zeroed)) && !json.Valid(out) {
			t.Fatalf("%q: %q is not JSON", s, out)
		}
	})
}
