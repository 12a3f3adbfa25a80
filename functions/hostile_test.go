package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/model"
)

// stage is where the request path refuses a hostile request.
type stage int

const (
	atDecode   stage = iota // model.DecodeRequest: the envelope (dispatcher and db-manager)
	atValidate              // ValidateRequest: the function's args without the model (dispatcher: rejected)
	atApply                 // Apply on the model (db-manager: failed)
)

func (s stage) String() string { return [...]string{"decode", "validate", "apply"}[s] }

// hostileCase is one request a model must refuse with an error that wraps
// model.ErrInvalid and names the problem, leaving the model unchanged.
type hostileCase struct {
	fn   string
	args string // the args' JSON text, put verbatim into the request envelope
	at   stage  // where it must be refused
	want string // substring of the error
	sql  bool   // the model enables the sql function
}

// hostileModel is a model with a few tables and staged files; every
// hostile case runs against it.
func hostileModel(t *testing.T) *testModel {
	t.Helper()
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a","n":1},{"id":2,"v":"b","n":2},{"id":3,"v":null,"n":null}]}`)
	m.mustApply("create_table", `{"table":"u","columns":[{"name":"k","type":"VARCHAR"},{"name":"j","type":"JSON"},{"name":"l","type":"INTEGER[]"}],"primary_key":["k"]}`)
	m.mustApply("append", `{"table":"u","rows":[{"k":"x","j":{"a":1},"l":[1,2]}]}`)
	m.mustApply("refresh", `{"table":"d","query":"SELECT n, count(*) AS c FROM t GROUP BY n"}`)

	m.copyTo("staging/hostile/h/good.parquet", `SELECT 10::BIGINT AS id, 'j' AS v, 10 AS n`, "FORMAT parquet")
	good, err := os.ReadFile(filepath.Join(m.store, "staging/hostile/h/good.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	m.put("staging/hostile/h/truncated.parquet", good[:len(good)-10])
	m.put("staging/hostile/h/head.parquet", good[:8])
	m.put("staging/hostile/h/text.parquet", []byte("id,v,n\n10,j,10\n"))
	m.put("staging/hostile/h/magic.parquet", append([]byte("PAR1"), bytes.Repeat([]byte{0}, 64)...))
	m.put("staging/hostile/h/empty.parquet", nil)
	corrupt := bytes.Clone(good)
	for i := 4; i < len(corrupt)/2; i++ {
		corrupt[i] ^= 0x5a
	}
	m.put("staging/hostile/h/corrupt.parquet", corrupt)
	m.put("staging/hostile/h/long.csv", []byte("id,v,n\n10,j,10\n11,k,11,surplus\n"))
	m.put("staging/hostile/h/short.csv", []byte("id,v,n\n10,j,10\n11,k\n"))
	m.put("staging/hostile/h/one.csv", []byte("id,v,n\n10\n"))
	m.put("staging/hostile/h/header.csv", []byte("id,v,\"n\"\"; DROP TABLE t; --\"\n10,j,10\n"))
	m.put("staging/hostile/h/binary.csv", good)
	m.put("staging/hostile/h/badtype.csv", []byte("id,v,n\n10,j,ten\n"))
	m.put("staging/hostile/h/dupkey.csv", []byte("id,v,n\n1,again,1\n"))
	m.put("staging/hostile/h/cut.json", []byte(`[{"id":10,"v":"j","n":10},{"id":11,`))
	m.put("staging/hostile/h/scalar.json", []byte(`42`))
	m.put("staging/hostile/h/garbage.arrow", []byte("ARROW1\x00\x00garbage garbage garbage"))
	return m
}

// hostileCases are the bad requests. dir is a directory the requests try
// to write to or read from.
func hostileCases(dir string) []hostileCase {
	big := strings.Repeat("x", model.MaxRequestBytes)
	leak := filepath.Join(dir, "leak.csv")
	db := filepath.Join(dir, "other.duckdb")
	tt := func(table string) string { return `{"table":` + mustString(table) + `,"rows":[{"id":9}]}` }
	q := func(query string) string { return `{"table":"d2","query":` + mustString(query) + `}` }
	s := func(stmt string) string { return `{"sql":` + mustString(stmt) + `}` }
	pay := func(uri string, extra ...string) string {
		return `{"table":"t","payload":{"uri":` + mustString(uri) + strings.Join(extra, "") + `}}`
	}
	return []hostileCase{
		// Malformed JSON: the request envelope does not decode.
		{"append", ``, atDecode, "not a JSON object", false},
		{"append", `{`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"id":9}]`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"id":9},]}`, atDecode, "not a JSON object", false},
		{"append", `{'table':'t'}`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"id":09}]}`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"id":NaN}]}`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"id":9}]} /* comment */`, atDecode, "not a JSON object", false},
		{"append", "{\"table\":\"t\x00\"}", atDecode, "not a JSON object", false},
		{"append", `null`, atDecode, "args must be a JSON object", false},
		{"append", `[{"table":"t"}]`, atDecode, "args must be a JSON object", false},
		{"append", `"{\"table\":\"t\"}"`, atDecode, "args must be a JSON object", false},
		{"append", `42`, atDecode, "args must be a JSON object", false},
		// Payload over the limit: a request is at most 1 MiB.
		{"append", `{"table":"t","rows":[{"id":9,"v":"` + big + `"}]}`, atDecode, "stage large data", false},
		{"refresh", q("SELECT '" + big + "' AS x"), atDecode, "at most 1048576", false},
		{"sql", s("INSERT INTO t VALUES (9, '" + big + "', 1)"), atDecode, "at most 1048576", true},
		// Args that are JSON but not the function's.
		{"append", `{}`, atValidate, "table is empty", false},
		{"append", `{"table":"t","rows":[{"id":9}],"rows":[{"id":10}]}`, atValidate, "twice", false},
		{"append", `{"Table":"t","rows":[{"id":9}]}`, atValidate, `unknown field "Table"`, false},
		{"append", `{"table":"t","rows":[{"id":9}],"__proto__":{}}`, atValidate, `unknown field "__proto__"`, false},
		{"append", `{"table":"t","rows":[{"id":9}]}{"table":"u"}`, atDecode, "not a JSON object", false},
		{"append", `{"table":"t","rows":[{"v":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}]}`, atValidate, "nests deeper than 64", false},
		// Wrong types.
		{"append", `{"table":7,"rows":[{"id":9}]}`, atValidate, "table must be a string, not a JSON number", false},
		{"append", `{"table":["t"],"rows":[{"id":9}]}`, atValidate, "table must be a string", false},
		{"append", `{"table":"t","rows":"id=9"}`, atValidate, "rows must be an array", false},
		{"append", `{"table":"t","rows":[[9,"a",1]]}`, atValidate, "must be an object", false},
		{"append", `{"table":"t","rows":[{"id":9}],"create":1}`, atValidate, "create must be true or false", false},
		{"append", `{"table":"t","payload":{"uri":7}}`, atValidate, "uri must be a string", false},
		{"create_table", `{"table":"w","columns":"id BIGINT"}`, atValidate, "columns must be an array", false},
		{"create_table", `{"table":"w","columns":[{"name":1,"type":"BIGINT"}]}`, atValidate, "must be a string", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"BIGINT"}],"primary_key":"a"}`, atValidate, "primary_key must be an array", false},
		{"update", `{"table":"t","set":[["v","x"]],"all":true}`, atValidate, "set must be an object", false},
		{"update", `{"table":"t","set":{"v":"x"},"where":[{"column":"id","op":1,"value":1}]}`, atValidate, "must be a string", false},
		{"delete", `{"table":"t","where":[{"column":["id"],"op":"=","value":1}]}`, atValidate, "must be a string", false},
		{"delete", `{"table":"t","all":"yes"}`, atValidate, "all must be true or false", false},
		{"refresh", `{"table":"d2","query":["SELECT 1"]}`, atValidate, "query must be a string", false},
		{"drop_table", `{"table":true}`, atValidate, "table must be a string", false},
		{"sql", `{"sql":{"stmt":"DELETE FROM t"}}`, atValidate, "sql must be a string", true},
		// Values of the wrong type for the column: only the model can tell.
		{"append", `{"table":"t","rows":[{"id":"nine"}]}`, atApply, `JSON string "nine" does not go into BIGINT`, false},
		{"append", `{"table":"t","rows":[{"id":9,"n":1.5}]}`, atApply, `column "n" (INTEGER): JSON number 1.5 does not go into INTEGER: it is not a whole number`, false},
		{"append", `{"table":"t","rows":[{"id":9,"n":25e-1}]}`, atApply, "JSON number 25e-1 does not go into INTEGER: it is not a whole number", false},
		{"upsert", `{"table":"t","rows":[{"id":1,"n":0.5}]}`, atApply, "JSON number 0.5 does not go into INTEGER: it is not a whole number", false},
		{"update", `{"table":"t","set":{"n":-1.000001},"all":true}`, atApply, "is not a whole number", false},
		{"append", `{"table":"t","rows":[{"id":9,"n":{"a":1}}]}`, atApply, "JSON object", false},
		{"append", `{"table":"t","rows":[{"id":99999999999999999999}]}`, atApply, "", false},
		{"append", `{"table":"u","rows":[{"k":"y","l":"not a list"}]}`, atApply, "", false},
		{"append", `{"table":"u","rows":[{"k":"y","l":[1,"a"]}]}`, atApply, "", false},
		{"upsert", `{"table":"t","rows":[{"id":"1; DROP TABLE t"}]}`, atApply, "does not go into BIGINT", false},
		{"update", `{"table":"t","set":{"n":"1); DROP TABLE t; --"},"all":true}`, atApply, "does not go into INTEGER", false},
		{"delete", `{"table":"t","where":[{"column":"id","op":"=","value":"1 OR 1=1"}]}`, atApply, "Could not convert", false},
		{"delete", `{"table":"t","where":[{"column":"id","op":"in","value":[1,"2) OR (1=1"]}]}`, atApply, "Could not convert", false},
		// Huge strings.
		{"drop_table", `{"table":"` + strings.Repeat("t", 100000) + `"}`, atValidate, "not a valid table name", false},
		{"append", `{"table":"t","rows":[{"` + strings.Repeat("c", 1000) + `":1}]}`, atValidate, "bytes long", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"` + strings.Repeat("INTEGER", 200) + `"}]}`, atValidate, "bytes long", false},
		{"append", pay("staging/hostile/h/" + strings.Repeat("f", 1100) + ".csv"), atValidate, "at most 1024", false},
		// NUL bytes.
		{"append", `{"table":"t\u0000","rows":[{"id":9}]}`, atValidate, "not a valid table name", false},
		{"append", `{"table":"t","rows":[{"v\u0000":"x"}]}`, atValidate, "NUL", false},
		{"update", `{"table":"t","set":{"v\u0000x":"x"},"all":true}`, atValidate, "NUL", false},
		{"delete", `{"table":"t","where":[{"column":"id\u0000","op":"is_null"}]}`, atValidate, "NUL", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"INTEGER\u0000"}]}`, atValidate, "", false},
		{"refresh", q("SELECT 1\x00; DROP TABLE t"), atValidate, "NUL", false},
		{"sql", s("DELETE FROM t\x00; DROP TABLE t"), atValidate, "NUL", true},
		{"append", pay("staging/hostile/h/good.parquet\x00.csv"), atValidate, "control character", false},
		// SQL in identifiers: refused by the name check, or quoted and then
		// unknown to the table.
		{"append", tt(`t; DROP TABLE t; --`), atValidate, "not a valid table name", false},
		{"append", tt(`t" ; DROP TABLE t; --`), atValidate, "not a valid table name", false},
		{"append", tt(`main.t`), atValidate, "not a valid table name", false},
		{"append", tt(`"t"`), atValidate, "not a valid table name", false},
		{"append", tt(`t--`), atValidate, "not a valid table name", false},
		{"drop_table", `{"table":"t CASCADE"}`, atValidate, "not a valid table name", false},
		{"drop_table", `{"table":"_teatree"}`, atValidate, "reserved", false},
		{"append", tt(`_TEATREE_applied`), atValidate, "reserved", false},
		{"refresh", `{"table":"d; DROP TABLE t","query":"SELECT 1"}`, atValidate, "not a valid table name", false},
		{"append", `{"table":"t","rows":[{"v\" = 'x'; DROP TABLE t; --":"x"}]}`, atApply, `is not a column of table t`, false},
		{"upsert", `{"table":"t","rows":[{"id":9,"n); DROP TABLE t; --":1}]}`, atApply, `is not a column of table t`, false},
		{"update", `{"table":"t","set":{"v\" = 'x', \"n":1},"all":true}`, atApply, `is not a column of table t`, false},
		{"update", `{"table":"t","set":{"v":"x"},"where":[{"column":"id = id OR 1=1 --","op":"=","value":1}]}`, atApply, "is not a column", false},
		{"delete", `{"table":"t","where":[{"column":"1=1) OR (id","op":"is_not_null"}]}`, atApply, "is not a column", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"INTEGER); DROP TABLE t; --"}]}`, atValidate, "unbalanced brackets", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"INTEGER DEFAULT (SELECT 1)"}]}`, atValidate, "not a DuckDB type", false},
		{"create_table", `{"table":"w","columns":[{"name":"a","type":"BIGINT"}],"primary_key":["a); DROP TABLE t; --"]}`, atValidate, "not one of the columns", false},
		{"delete", `{"table":"t","where":[{"column":"id","op":"= 1 OR 1=1 --","value":1}]}`, atValidate, "not an op", false},
		{"delete", `{"table":"t","where":[{"column":"id","op":"is_null OR 1=1"}]}`, atValidate, "not an op", false},
		// Model names: table names with unicode, dots, wildcards, spaces.
		{"append", tt(`tä`), atValidate, "not a valid table name", false},
		{"append", tt("t\u200b"), atValidate, "not a valid table name", false},
		{"append", tt(`ｔ`), atValidate, "not a valid table name", false},
		{"append", tt(`t*`), atValidate, "not a valid table name", false},
		{"append", tt(`t>`), atValidate, "not a valid table name", false},
		{"append", tt(`t u`), atValidate, "not a valid table name", false},
		{"create_table", `{"table":"w w","columns":[{"name":"a","type":"INTEGER"}]}`, atValidate, "not a valid table name", false},
		// refresh: one SELECT over the model, nothing that reads or writes
		// files or runs other statements.
		{"refresh", q("COPY t TO " + sqlQuote(leak)), atValidate, "one SELECT statement", false},
		{"refresh", q("COPY (SELECT * FROM t) TO " + sqlQuote(leak) + " (FORMAT csv)"), atValidate, "one SELECT statement", false},
		{"refresh", q("SELECT * FROM t; COPY t TO " + sqlQuote(leak)), atValidate, "", false},
		{"refresh", q("SELECT * FROM read_csv('/etc/passwd')"), atValidate, "read_csv()", false},
		{"refresh", q("SELECT * FROM read_csv_auto('/etc/passwd')"), atValidate, "read_csv_auto()", false},
		{"refresh", q("SELECT * FROM '/etc/passwd'"), atValidate, "not a table name", false},
		{"refresh", q(`SELECT * FROM "/etc/passwd"`), atValidate, "not a table name", false},
		{"refresh", q("SELECT (SELECT count(*) FROM read_text('/etc/passwd')) AS n"), atValidate, "read_text()", false},
		{"refresh", q("SELECT * FROM t UNION ALL SELECT * FROM read_parquet('/etc/x.parquet')"), atValidate, "read_parquet()", false},
		{"refresh", q("ATTACH " + sqlQuote(db) + " AS other"), atValidate, "one SELECT statement", false},
		{"refresh", q("SELECT * FROM t; ATTACH " + sqlQuote(db)), atValidate, "", false},
		{"refresh", q("INSTALL httpfs"), atValidate, "one SELECT statement", false},
		{"refresh", q("LOAD httpfs"), atValidate, "one SELECT statement", false},
		{"refresh", q("SELECT 1 AS x; DROP TABLE t"), atValidate, "one SELECT statement", false},
		{"refresh", q("SELECT 1 AS x; SELECT 2 AS y"), atValidate, "2 statements", false},
		{"refresh", q("SELECT 1 AS x;\n-- hidden\nDELETE FROM t"), atValidate, "", false},
		{"refresh", q("SELECT 1 AS x) AS s; DROP TABLE t; SELECT (1"), atValidate, "not valid SQL", false},
		{"refresh", q("SELECT 1 /* unterminated"), atValidate, "not valid SQL", false},
		{"refresh", q("-- nothing but a comment"), atValidate, "", false},
		{"refresh", q("SELECT getenv('HOME') AS h"), atValidate, "getenv()", false},
		{"refresh", q("SELECT current_setting('allowed_directories') AS d"), atValidate, "current_setting()", false},
		{"refresh", q("SELECT * FROM query('DROP TABLE t')"), atValidate, "query()", false},
		{"refresh", q("SELECT * FROM duckdb_settings()"), atValidate, "duckdb_settings()", false},
		{"refresh", q("SELECT * FROM information_schema.columns"), atValidate, "schema main", false},
		{"refresh", q("SELECT * FROM _teatree.applied"), atValidate, "schema main", false},
		{"refresh", q("SELECT * FROM other.main.t"), atValidate, "schema main", false},
		{"refresh", q("PIVOT t ON v USING sum(n)"), atValidate, "one SELECT statement", false},
		{"refresh", q("CALL checkpoint()"), atValidate, "one SELECT statement", false},
		{"refresh", q("SET enable_external_access = true"), atValidate, "one SELECT statement", false},
		{"refresh", q("PRAGMA enable_external_access"), atValidate, "one SELECT statement", false},
		{"refresh", q("SELECT * FROM missing_table"), atApply, "missing_table does not exist", false},
		{"refresh", q("SELECT error('no') AS x FROM t"), atApply, "no", false},
		// sql: off unless the model enables it; then one allowed
		// statement, no files.
		{"sql", s("DELETE FROM t"), atValidate, "not enabled", false},
		{"sql", s("COPY t TO " + sqlQuote(leak)), atValidate, "COPY", true},
		{"sql", s("ATTACH " + sqlQuote(db) + " AS other"), atValidate, "ATTACH", true},
		{"sql", s("INSTALL httpfs"), atValidate, "INSTALL", true},
		{"sql", s("LOAD httpfs"), atValidate, "LOAD", true},
		{"sql", s("SET enable_external_access = true"), atValidate, "SET", true},
		{"sql", s("CREATE TABLE pw AS SELECT * FROM read_csv('/etc/passwd')"), atValidate, "files", true},
		{"sql", s("CREATE TABLE g AS FROM glob('/*')"), atValidate, "files", true},
		{"sql", s("DELETE FROM t; DROP TABLE t"), atValidate, "more than one statement", true},
		{"sql", s("DROP SCHEMA \"_TeaTree\" CASCADE"), atValidate, "_teatree", true},
		{"sql", s("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')"), atValidate, "files", true},
		{"sql", s("INSERT INTO t VALUES (1, 'dup', 1)"), atApply, "Duplicate key", true},
		// Staged payloads that are not what they claim.
		{"append", pay("staging/hostile/h/truncated.parquet"), atApply, `staged file "truncated.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/head.parquet"), atApply, `staged file "head.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/text.parquet"), atApply, `staged file "text.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/magic.parquet"), atApply, `staged file "magic.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/empty.parquet"), atApply, `staged file "empty.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/corrupt.parquet"), atApply, `staged file "corrupt.parquet" is not a valid Parquet file`, false},
		{"append", pay("staging/hostile/h/good.parquet", `,"format":"csv"`), atApply, "is not a valid CSV file (format given by the request)", false},
		{"append", pay("staging/hostile/h/long.csv"), atApply, `staged file "long.csv" is not a valid CSV file`, false},
		{"append", pay("staging/hostile/h/short.csv"), atApply, `staged file "short.csv" is not a valid CSV file`, false},
		{"append", pay("staging/hostile/h/one.csv"), atApply, `staged file "one.csv" is not a valid CSV file`, false},
		{"append", pay("staging/hostile/h/header.csv"), atApply, `extra "n""; DROP TABLE t; --"`, false},
		{"append", pay("staging/hostile/h/binary.csv"), atApply, `staged file "binary.csv" is not a valid CSV file`, false},
		{"append", pay("staging/hostile/h/badtype.csv"), atApply, "Could not convert", false},
		{"append", pay("staging/hostile/h/dupkey.csv"), atApply, "Duplicate key", false},
		{"append", `{"table":"fresh","payload":{"uri":"staging/hostile/h/long.csv"}}`, atApply, `staged file "long.csv" is not a valid CSV file`, false},
		{"append", `{"table":"fresh","payload":{"uri":"staging/hostile/h/truncated.parquet"}}`, atApply, "is not a valid Parquet file (format from its extension)", false},
		{"append", pay("staging/hostile/h/cut.json"), atApply, `staged file "cut.json" is not a valid JSON file`, false},
		{"append", pay("staging/hostile/h/scalar.json"), atApply, "json payload staging/hostile/h/scalar.json", false},
		{"append", pay("staging/hostile/h/garbage.arrow"), atApply, "not a valid Arrow IPC file or stream", false},
		// Payload references that try to leave the staging area.
		{"append", pay("/etc/passwd", `,"format":"csv"`), atValidate, "staged object", false},
		{"append", pay("staging/../../etc/passwd", `,"format":"csv"`), atValidate, "clean object key", false},
		{"append", pay("staging/hostile/h/../../etc/passwd.csv"), atValidate, "clean object key", false},
		{"append", pay(`staging\..\etc\passwd.csv`), atValidate, "staged object", false},
		{"append", pay(`staging/hostile/h\..\..\etc\passwd.csv`), atValidate, "backslash", false},
		{"append", pay("file:///etc/passwd.csv"), atValidate, "staged object", false},
		{"append", pay("staging/hostile/h/good.parquet", `,"delimiter":"'"`), atValidate, "delimiter applies to csv only", false},
		{"append", pay("staging/hostile/h/long.csv", `,"delimiter":"', header=false); DROP TABLE t; --"`), atValidate, "one printable ASCII character", false},
	}
}

// TestHostileRequests runs every hostile request through the path a
// request takes (decode, validate as the dispatcher does, apply as the
// db-manager does, in a transaction rolled back on error) and checks that
// it is refused where expected, with an ErrInvalid naming the problem,
// and that the model is unchanged. Requests refused before Apply are also
// given to Apply directly, which must refuse them too. A good request
// afterwards applies.
func TestHostileRequests(t *testing.T) {
	m := hostileModel(t)
	dir := t.TempDir()
	cases := hostileCases(dir)
	if len(cases) < 100 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	before := fingerprint(m)
	for i, tc := range cases {
		name := fmt.Sprintf("%d %s %.70q", i, tc.fn, tc.args)
		m.allowSQL = tc.sql
		m.fetched = nil
		err, at := m.through("h", tc.fn, tc.args, tc.sql) // payloads are staged for request h
		switch {
		case err == nil:
			t.Errorf("%s: accepted, want a refusal at %s containing %q", name, tc.at, tc.want)
			continue
		case at != tc.at:
			t.Errorf("%s: refused at %s (%v), want at %s", name, at, err, tc.at)
		}
		checkRefusal(t, name, err, tc.want)
		if at < atApply && len(m.fetched) > 0 {
			t.Errorf("%s: payload fetched for a request refused at %s", name, at)
		}
		if at == atValidate {
			f, _ := Lookup(tc.fn)
			_, aerr := m.apply(tc.fn, tc.args)
			if f.Name() == tc.fn && aerr == nil {
				t.Errorf("%s: Apply accepts what ValidateRequest refuses", name)
			} else if !errors.Is(aerr, model.ErrInvalid) {
				t.Errorf("%s: Apply error %v does not wrap model.ErrInvalid", name, aerr)
			}
		}
		if diff := cmp.Diff(before, fingerprint(m)); diff != "" {
			t.Fatalf("%s changed the model (-before +after):\n%s", name, diff)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) > 0 {
		t.Errorf("files appeared in %s: %v %v", dir, entries, err)
	}
	// The model keeps going: a good request after all that applies.
	m.allowSQL = false
	if err, at := m.through("good-after", "append", `{"table":"t","rows":[{"id":4,"v":"d","n":4}]}`, false); err != nil {
		t.Fatalf("good request after the hostile ones refused at %s: %v", at, err)
	}
	wantRows(t, m, `SELECT id FROM t ORDER BY id`, "1", "2", "3", "4")
}

// through takes one request down the path a request takes and returns the
// first error with the stage that refused it.
func (m *testModel) through(id, fn, args string, allowSQL bool) (error, stage) {
	m.t.Helper()
	data := []byte(`{"request_id":"` + id + `","model":"hostile","function":"` + fn + `","args":` + args + `}`)
	req, err := model.DecodeRequest(data)
	if err != nil {
		return err, atDecode
	}
	if err := ValidateRequest(req, allowSQL); err != nil {
		return err, atValidate
	}
	_, err = m.apply(req.Function, string(req.Args))
	return err, atApply
}

// checkRefusal checks that err wraps model.ErrInvalid, contains want and
// is short enough to read.
func checkRefusal(t *testing.T, name string, err error, want string) {
	t.Helper()
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("%s: error %v does not wrap model.ErrInvalid", name, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q does not contain %q", name, err, want)
	}
	if n := len(err.Error()); n > 4096 {
		t.Errorf("%s: error is %d bytes long: %.200s…", name, n, err)
	}
}

// fingerprint describes everything a function could change: every table,
// view, macro, sequence and schema with its columns and sorted rows.
func fingerprint(m *testModel) []string {
	m.t.Helper()
	out := m.rows(`SELECT 'schema ' || schema_name FROM duckdb_schemas() WHERE database_name = current_database() ORDER BY ALL`)
	out = append(out, m.rows(`SELECT 'view ' || schema_name || '.' || view_name FROM duckdb_views() WHERE NOT internal ORDER BY ALL`)...)
	out = append(out, m.rows(`SELECT 'function ' || schema_name || '.' || function_name FROM duckdb_functions() WHERE NOT internal ORDER BY ALL`)...)
	out = append(out, m.rows(`SELECT 'sequence ' || schema_name || '.' || sequence_name FROM duckdb_sequences() ORDER BY ALL`)...)
	tables := m.rows(`SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND database_name = current_database() ORDER BY ALL`)
	for _, tb := range tables {
		out = append(out, "table "+tb)
		out = append(out, m.rows(`SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index`, tb)...)
		out = append(out, m.rows(`SELECT * FROM main.`+quoteIdent(tb)+` ORDER BY ALL`)...)
	}
	return out
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func sqlQuote(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

func mustString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// hostileValues are values that look like SQL, quoting or control input;
// every function must store and match them literally.
var hostileValues = []string{
	`x'); DROP TABLE t; --`,
	`'; DELETE FROM t WHERE ''='`,
	`" OR 1=1 --`,
	`\'; SELECT 1; --`,
	`$1`,
	`?`,
	`%_%`,
	"a\x00b",
	"\x00",
	"line\nbreak\r\n\ttab",
	"🙂 ünïcødé ﷽",
	"\u202e\u200b",
	`COPY t TO '/tmp/x.csv'`,
	`/* */ ATTACH 'x.db'`,
	strings.Repeat("long'", 100000),
}

// TestHostileValuesStoredLiterally: values and column names that look like
// SQL are bound and quoted: append, upsert, update and delete store and
// match them byte for byte, and nothing else happens.
func TestHostileValuesStoredLiterally(t *testing.T) {
	m := newModel(t)
	weird := `c"; DROP TABLE t; --`
	m.mustApply("create_table", mustJSON(t, map[string]any{"table": "t", "columns": []map[string]string{
		{"name": "id", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}, {"name": weird, "type": "VARCHAR"}, {"name": "ünï cødé", "type": "VARCHAR"}},
		"primary_key": []string{"id"}}))
	ctx := context.Background()
	read := func(id int) (string, string, string) {
		t.Helper()
		var v, w, u string
		q := `SELECT v, ` + quoteIdent(weird) + `, "ünï cødé" FROM t WHERE id = ?`
		if err := m.conn.QueryRowContext(ctx, q, id).Scan(&v, &w, &u); err != nil {
			t.Fatalf("row %d: %v", id, err)
		}
		return v, w, u
	}
	for i, val := range hostileValues {
		id := i + 1
		m.mustApply("append", mustJSON(t, map[string]any{"table": "t", "rows": []map[string]any{{"id": id, "v": val, weird: val, "ünï cødé": val}}}))
		if v, w, u := read(id); v != val || w != val || u != val {
			t.Errorf("append %.40q: stored %.40q, %.40q, %.40q", val, v, w, u)
		}
		// update where v = val matches exactly that row.
		res := m.mustApply("update", mustJSON(t, map[string]any{"table": "t", "set": map[string]any{weird: val + "!"}, "where": []map[string]any{{"column": "v", "op": "=", "value": val}}}))
		if res.Rows != 1 {
			t.Errorf("update where v = %.40q matched %d rows, want 1", val, res.Rows)
		}
		if _, w, _ := read(id); w != val+"!" {
			t.Errorf("update set %.40q: stored %.40q", val+"!", w)
		}
		// upsert by key replaces it again.
		m.mustApply("upsert", mustJSON(t, map[string]any{"table": "t", "rows": []map[string]any{{"id": id, "v": val, weird: val, "ünï cødé": val}}}))
		if v, w, _ := read(id); v != val || w != val {
			t.Errorf("upsert %.40q: stored %.40q, %.40q", val, v, w)
		}
	}
	n := len(hostileValues)
	wantRows(t, m, `SELECT count(*), count(DISTINCT v) FROM t`, fmt.Sprintf("%d|%d", n, n))
	// in and like bind their values too; like sees '%' and '_' as the
	// pattern characters they are, nothing more.
	res := m.mustApply("delete", mustJSON(t, map[string]any{"table": "t", "where": []map[string]any{{"column": "v", "op": "in", "value": []string{hostileValues[0], hostileValues[1], "no such value"}}}}))
	if res.Rows != 2 {
		t.Errorf("delete in: %d rows, want 2", res.Rows)
	}
	res = m.mustApply("delete", mustJSON(t, map[string]any{"table": "t", "where": []map[string]any{{"column": weird, "op": "like", "value": "%DROP TABLE%' OR 1=1 --"}}}))
	if res.Rows != 0 {
		t.Errorf("delete like: %d rows, want 0", res.Rows)
	}
	wantRows(t, m, `SELECT count(*) FROM t`, fmt.Sprint(n-2))
	// A refresh copies them unchanged.
	m.mustApply("refresh", `{"table":"copy","query":"SELECT id, v FROM t"}`)
	wantRows(t, m, `SELECT count(*) FROM t JOIN copy USING (id) WHERE t.v IS NOT DISTINCT FROM copy.v`, fmt.Sprint(n-2))
	// A staged file whose key looks like SQL is read through a bound path.
	key := `staging/hostile/h/x'); DROP TABLE t; --.csv`
	m.put(key, []byte("id,v,"+csvQuote(weird)+",ünï cødé\n1000,\"'); DROP TABLE t; --\",a,b\n"))
	m.mustApply("append", mustJSON(t, map[string]any{"table": "t", "payload": map[string]any{"uri": key}}))
	if v, _, _ := read(1000); v != `'); DROP TABLE t; --` {
		t.Errorf("csv value stored as %q", v)
	}
	wantRows(t, m, `SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main'`, "2")
}

// TestWholeNumber: the check that keeps a fraction out of an integer
// column, on the JSON number grammar's corners.
func TestWholeNumber(t *testing.T) {
	for n, want := range map[string]bool{
		"0": true, "-0": true, "0.0": true, "2": true, "2.0": true, "-2.000": true, "2.5e1": true, "25E+0": true, "1e400": true,
		"1e99999999999999999999": true, "0.0e-5": true, "100e-2": true, "120e-1": true,
		"2.5": false, "-0.5": false, "25e-1": false, "1e-400": false, "1e-99999999999999999999": false, "101e-2": false,
		"0.000000000000000000001": false, "12345678901234567890.1": false,
	} {
		if got := wholeNumber(n); got != want {
			t.Errorf("wholeNumber(%s) = %v, want %v", n, got, want)
		}
	}
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"n":2.0},{"id":2.5e1,"n":1e2}]}`)
	wantRows(t, m, `SELECT id, n FROM t ORDER BY id`, "1|2", "25|100")
}

func csvQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// FuzzDecodeAndValidate is the dispatcher's verdict on raw message bytes:
// model.DecodeRequest then ValidateRequest. It must never panic, every
// refusal wraps model.ErrInvalid with a bounded message, and an accepted
// request has a valid model id and request id, a known function, fits the
// size limit, and is accepted again after a JSON round trip.
func FuzzDecodeAndValidate(f *testing.F) {
	for _, fn := range All() {
		for _, ex := range schemaExamples(fn.Schema()) {
			f.Add([]byte(`{"request_id":"r-1","model":"m","function":"`+fn.Name()+`","args":`+string(ex)+`}`), fn.Privileged())
		}
	}
	for i, tc := range hostileCases("/tmp/fuzz") {
		if len(tc.args) < 4096 {
			f.Add([]byte(fmt.Sprintf(`{"request_id":"h-%d","model":"m","function":%q,"args":%s}`, i, tc.fn, tc.args)), tc.sql)
		}
	}
	f.Add([]byte(`{"request_id":"r","model":"m","function":"append","args":{"table":"t","rows":[{"a":1}]},"submitted":"2024-01-01T00:00:00Z"}`), false)
	f.Add([]byte(`{"request_id":"r","model":"M.*>","function":"append","args":{}}`), false)
	f.Fuzz(func(t *testing.T, data []byte, allowSQL bool) {
		req, err := model.DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("DecodeRequest(%q): %v does not wrap ErrInvalid", data, err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("DecodeRequest(%q): error is %d bytes long", data, len(err.Error()))
			}
			return
		}
		if err := ValidateRequest(req, allowSQL); err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("ValidateRequest(%q): %v does not wrap ErrInvalid", data, err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("ValidateRequest(%q): error is %d bytes long", data, len(err.Error()))
			}
			if !strings.Contains(err.Error(), req.ID) {
				t.Fatalf("ValidateRequest(%q): %v does not name the request", data, err)
			}
			return
		}
		if len(data) > model.MaxRequestBytes {
			t.Fatalf("accepted a request of %d bytes", len(data))
		}
		if model.ValidateID(req.Model) != nil || model.ValidateRequestID(req.ID) != nil {
			t.Fatalf("accepted %q with model %q, id %q", data, req.Model, req.ID)
		}
		if _, err := Lookup(req.Function); err != nil {
			t.Fatalf("accepted unknown function %q", req.Function)
		}
		if f, _ := Lookup(req.Function); f.Privileged() && !allowSQL {
			t.Fatalf("accepted sql on a model without it: %q", data)
		}
		again, err := json.Marshal(req)
		if err != nil {
			return // args with bytes encoding/json will not re-encode
		}
		req2, err := model.DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		if req2.ID != req.ID || req2.Model != req.Model || req2.Function != req.Function {
			t.Fatalf("round trip changed %+v to %+v", req, req2)
		}
		if err := ValidateRequest(req2, allowSQL); err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
	})
}
