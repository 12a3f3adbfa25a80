package functions

import (
	"fmt"
	"strings"
	"testing"
)

// TestInlineValuesStrict: inline row values go into a column of every
// DuckDB type by the strict rules (README, "Inline values"): the allowed
// JSON values store exactly what they say, the refused ones fail the
// request with the row, column, type and value in the error.
func TestInlineValuesStrict(t *testing.T) {
	type ok struct{ json, sql string } // sql: a DuckDB literal of the stored value
	for _, tc := range []struct {
		typ  string
		ok   []ok
		bad  []string // JSON values
		want string   // in every refusal (besides the row, column, type)
	}{
		{"BOOLEAN", []ok{{"true", "true"}, {"false", "false"}, {"null", "NULL"}}, []string{"1", "0", `"true"`, `"t"`}, "give true or false"},
		{"TINYINT", []ok{{"127", "127"}, {"-128", "-128"}, {"1.0", "1"}, {`"12"`, "12"}}, []string{"128", "-129", "true", "1.5", `" 12"`}, ""},
		{"SMALLINT", []ok{{"32767", "32767"}, {"-32768", "-32768"}}, []string{"32768", "false"}, ""},
		{"INTEGER", []ok{{"2147483647", "2147483647"}, {"2.5e1", "25"}, {"-0", "0"}}, []string{"2147483648", `"abc"`, "25e-1", "[1]"}, ""},
		{"BIGINT", []ok{{"9223372036854775807", "9223372036854775807"}, {"-9223372036854775808", "-9223372036854775808"}, {`"42"`, "42"}, {"4.2e1", "42"}},
			[]string{"9223372036854775808", "1e19", "true", `"  42 "`, `"+42"`, `"0x2A"`, `"42abc"`, "1e999999999", "0.5"}, ""},
		{"HUGEINT", []ok{{"170141183460469231731687303715884105727", "170141183460469231731687303715884105727"}, {"1e30", "1000000000000000000000000000000"}},
			[]string{"170141183460469231731687303715884105728", "1e39"}, "out of range"},
		{"UTINYINT", []ok{{"255", "255"}, {"0", "0"}}, []string{"-1", "256"}, "out of range (0 to 255)"},
		{"USMALLINT", []ok{{"65535", "65535"}}, []string{"65536", "-1"}, "out of range"},
		{"UINTEGER", []ok{{"4294967295", "4294967295"}}, []string{"4294967296"}, "out of range"},
		{"UBIGINT", []ok{{"18446744073709551615", "18446744073709551615"}}, []string{"18446744073709551616", "-1"}, "out of range"},
		{"UHUGEINT", []ok{{"340282366920938463463374607431768211455", "340282366920938463463374607431768211455"}}, []string{"340282366920938463463374607431768211456"}, "out of range"},
		{"DECIMAL(5,2)", []ok{{"123.45", "123.45"}, {`"0.10"`, "0.10"}, {"-1", "-1"}, {"1.5e2", "150"}, {"1.20", "1.2"}},
			[]string{"1.234", "1234.5", "1e3", `"1.2.3"`, "true", `" 1.5"`}, ""},
		{"DECIMAL(38,10)", []ok{{"1234567890123456789012345678.0123456789", "1234567890123456789012345678.0123456789"}}, []string{"0.00000000001"}, "more than 10 decimal places"},
		{"FLOAT", []ok{{"1.5", "1.5"}, {"-2", "-2"}, {"3e38", "3e38"}}, []string{"1e39", `"1.5"`, "true"}, ""},
		{"DOUBLE", []ok{{"0.1", "0.1"}, {"1e308", "1e308"}, {"-5", "-5"}, {"1e-400", "0"}}, []string{"1e309", `"1"`, "false"}, ""},
		{"VARCHAR", []ok{{`"  padded  "`, "'  padded  '"}, {`""`, "''"}, {`"1"`, "'1'"}}, []string{"42", "true", `["a"]`, `{"a":1}`}, "give a JSON string"},
		{"BLOB", []ok{{`"abc"`, "'abc'::BLOB"}, {`"\\x41"`, `'\x5Cx41'::BLOB`}}, []string{"1", "true"}, "give a JSON string"},
		{"DATE", []ok{{`"2024-02-29"`, "DATE '2024-02-29'"}}, []string{`" 2024-02-29"`, `"2024-02-29 "`, `"2024-02-30"`, `"yesterday"`, "20240229", "true"}, ""},
		{"TIME", []ok{{`"12:34:56"`, "TIME '12:34:56'"}}, []string{"45296", `"12:34:56\n"`, `"25:00:00"`}, ""},
		{"TIMESTAMP", []ok{{`"2024-01-02 03:04:05.5"`, "TIMESTAMP '2024-01-02 03:04:05.5'"}, {`"2024-01-02"`, "TIMESTAMP '2024-01-02'"}}, []string{"1704164645", `"2024-01-02 03:04:05 "`}, ""},
		{"TIMESTAMP WITH TIME ZONE", []ok{{`"2024-01-02 03:04:05+02"`, "TIMESTAMPTZ '2024-01-02 01:04:05+00'"}}, []string{"0", `"\t2024-01-02"`}, ""},
		{"INTERVAL", []ok{{`"1 day 2 hours"`, "INTERVAL '1 day 2 hours'"}}, []string{"86400", `" 1 day"`}, ""},
		{"UUID", []ok{{`"0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11"`, "'0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11'::UUID"}}, []string{"1", `" 0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11"`, `"not-a-uuid"`}, ""},
		{"BIT", []ok{{`"0101"`, "'0101'::BIT"}}, []string{"5", "true", `"0102"`}, ""},
		{"JSON", []ok{{`{"a":[1,"x",null]}`, `'{"a":[1,"x",null]}'::JSON`}, {`"s"`, `'"s"'::JSON`}, {"1.50", "'1.50'::JSON"}, {"true", "'true'::JSON"}}, nil, ""},
		{"INTEGER[]", []ok{{"[1,2]", "[1, 2]"}, {"[]", "[]::INTEGER[]"}, {"[null,3]", "[NULL, 3]"}}, []string{`[1,"two"]`, "[1.5]", `"[1,2]"`, `{"a":1}`, "[true]"}, ""},
		{"VARCHAR[]", []ok{{`["a","b, c","'q'"]`, `['a', 'b, c', '''q''']`}}, []string{`["a",1]`, `"a"`}, ""},
		{"INTEGER[][]", []ok{{"[[1],[2,3]]", "[[1], [2, 3]]"}}, []string{"[[1],[2.5]]", "[1]"}, ""},
		{"INTEGER[2]", []ok{{"[1,2]", "[1, 2]::INTEGER[2]"}}, []string{"[1]", "[1,2,3]"}, "array of 2 elements"},
		{"DATE[]", []ok{{`["2024-01-01",null]`, "[DATE '2024-01-01', NULL]"}}, []string{`[" 2024-01-01"]`, "[20240101]"}, ""},
		{"STRUCT(a INTEGER, b VARCHAR)", []ok{{`{"a":1,"b":"x"}`, "{'a': 1, 'b': 'x'}"}, {`{"a":2}`, "{'a': 2, 'b': NULL}"}}, []string{`{"a":"one"}`, `{"c":1}`, "[1]", `{"b":2}`}, ""},
		{"DECIMAL(5,2)[]", []ok{{`[1.25,"2.50",null]`, "[1.25, 2.50, NULL]"}}, []string{"[1.234]", "[true]"}, ""},
		{"UNION(i INTEGER, s VARCHAR)", []ok{{`{"i":5}`, "5"}, {`{"s":"x"}`, "'x'"}}, []string{"5", `{"z":1}`, `{"i":"x"}`, `{"i":1,"s":"a"}`}, ""},
		{"JSON[]", []ok{{`[{"k":1},"s"]`, `['{"k":1}', '"s"']::JSON[]`}}, []string{`{"k":1}`}, "give a JSON array"},
		{"MAP(VARCHAR, INTEGER)", []ok{{`{"k":1,"l":null}`, "MAP {'k': 1, 'l': NULL}"}}, []string{`{"k":"one"}`, "[1]", `{"k":1.5}`}, ""},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			m := newModel(t)
			m.mustApply("create_table", fmt.Sprintf(`{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":%q}]}`, tc.typ))
			var rows, want []string
			for i, o := range tc.ok {
				rows = append(rows, fmt.Sprintf(`{"id":%d,"v":%s}`, i, o.json))
				want = append(want, m.rows(fmt.Sprintf("SELECT %d, CAST(%s AS %s)::VARCHAR", i, o.sql, tc.typ))...)
			}
			if len(rows) > 0 {
				m.mustApply("append", `{"table":"t","rows":[`+strings.Join(rows, ",")+`]}`)
				wantRows(t, m, "SELECT id, v::VARCHAR FROM t ORDER BY id", want...)
			}
			for _, b := range tc.bad {
				// The bad value is row 1, after a good one.
				args := `{"table":"t","rows":[{"id":100},{"id":101,"v":` + b + `}]}`
				err := m.applyErr("append", args, `row 1: column "v" (`+tc.typ+`): JSON `)
				if err != nil && (!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), " "+valueExcerpt(decodeT(t, b))+" ")) {
					t.Errorf("%s: error %q does not say %q or quote the value %s", b, err, tc.want, valueExcerpt(decodeT(t, b)))
				}
				err = m.applyErr("update", `{"table":"t","set":{"v":`+b+`},"all":true}`, `set column "v" (`+tc.typ+`): JSON `)
				if err != nil && !strings.Contains(err.Error(), tc.want) {
					t.Errorf("update %s: error %q does not say %q", b, err, tc.want)
				}
			}
			wantRows(t, m, "SELECT count(*) FROM t WHERE id >= 100", "0")
		})
	}
}

func decodeT(t *testing.T, s string) any {
	t.Helper()
	v, err := decodeValue([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInlineValuesEnum: a type the catalog spells with quotes (an ENUM made
// by sql) takes its member names as strings, exactly.
func TestInlineValuesEnum(t *testing.T) {
	m := newModel(t)
	m.exec(`CREATE TABLE e (id BIGINT, m ENUM('a', 'b c'))`)
	m.mustApply("append", `{"table":"e","rows":[{"id":1,"m":"a"},{"id":2,"m":"b c"}]}`)
	wantRows(t, m, "SELECT id, m FROM e ORDER BY id", "1|a", "2|b c")
	m.applyErr("append", `{"table":"e","rows":[{"id":3,"m":" a"}]}`, `row 0: column "m" (ENUM('a', 'b c')): JSON string " a" does not go into`)
	m.applyErr("append", `{"table":"e","rows":[{"id":3,"m":1}]}`, `row 0: column "m" (ENUM('a', 'b c')): JSON number 1 does not go into`)
	m.applyErr("append", `{"table":"e","rows":[{"id":3,"m":"a"},{"id":4,"m":"z"}]}`, `row 1: column "m" (ENUM('a', 'b c')): JSON string "z" is not a ENUM`)
}

// TestApplyErrorsQuoteBoundedExcerpts: an error that quotes a value of the
// request, ours or DuckDB's, quotes a bounded excerpt, however long the
// value: it goes into a notification.
func TestApplyErrorsQuoteBoundedExcerpts(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"d","type":"DATE"},{"name":"v","type":"VARCHAR"}]}`)
	m.mustApply("append", `{"table":"t","rows":[{"id":1}]}`)
	long := strings.Repeat("9\\u0001", 40000)
	digits := strings.Repeat("7", 100000)
	for _, tc := range []struct{ fn, args string }{
		{"append", `{"table":"t","rows":[{"id":"` + long + `"}]}`},
		{"append", `{"table":"t","rows":[{"id":` + digits + `}]}`},
		{"append", `{"table":"t","rows":[{"id":1.` + digits + `}]}`},
		{"append", `{"table":"t","rows":[{"id":1,"d":"` + long + `"}]}`},
		{"append", `{"table":"t","rows":[{"id":1,"d":"x` + strings.Repeat("y", 100000) + `"}]}`},
		{"update", `{"table":"t","set":{"d":"x` + strings.Repeat("y", 100000) + `"},"all":true}`},
		{"delete", `{"table":"t","where":[{"column":"id","op":"=","value":"` + long + `"}]}`},
		{"delete", `{"table":"t","where":[{"column":"d","op":"in","value":["` + long + `"]}]}`},
	} {
		err := m.applyErr(tc.fn, tc.args, "")
		if err != nil && len(err.Error()) > maxErrorLen {
			t.Errorf("%s: error is %d bytes long: %.300s", tc.fn, len(err.Error()), err)
		}
		if err != nil && strings.ContainsRune(err.Error(), '\x01') {
			t.Errorf("%s %.60s…: error holds a raw control character", tc.fn, tc.args)
		}
	}
}

// TestFileColumnsErrorBounded: a file with thousands of columns that do
// not match the table gets an error of bounded length.
func TestFileColumnsErrorBounded(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"}]}`)
	var cols []string
	for i := range 3000 {
		cols = append(cols, fmt.Sprintf("%d AS %s", i, strings.Repeat("c", 200)+fmt.Sprint(i)))
	}
	m.copyTo("staging/r/wide.parquet", "SELECT "+strings.Join(cols, ", "), "FORMAT parquet")
	err := m.applyErr("append", `{"table":"t","payload":{"uri":"staging/r/wide.parquet"}}`, "does not have the columns of table t")
	if err != nil && len(err.Error()) > maxErrorLen {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
}
