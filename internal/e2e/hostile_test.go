package e2e

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// teactlCase is one teactl invocation with bad input and the exit code and
// stderr text it must give.
type teactlCase struct {
	args []string
	code int
	msg  string
}

// TestTeactlRefusesHostileInputOffline: bad input is refused by teactl
// itself with exit 2 and a message naming the problem, before it contacts
// any service: the URLs point at a closed port, so a command that tried to
// connect would exit 6 (unreachable) instead.
func TestTeactlRefusesHostileInputOffline(t *testing.T) {
	dir := t.TempDir()
	write := fileWriter(t, dir)
	csv := write("f.csv", []byte("id,v\n1,a\n"))
	xlsx := write("f.xlsx", []byte("PK\x03\x04"))
	nl := write("f\nx.csv", []byte("id,v\n1,a\n"))
	bigRows := write("big.json", []byte(`[{"id":1,"v":"`+strings.Repeat("x", 1<<20+10)+`"}]`))
	notRows := write("rows.ndjson", []byte("{\"id\":1}\n[2]\n"))
	longLine := write("long.ndjson", []byte(`{"v":"`+strings.Repeat("y", 2<<20)+`"}`+"\n"))
	env := []string{"TEATREE_NATS_URL=nats://127.0.0.1:1", "TEATREE_POSTGRES_URL=postgres://x@127.0.0.1:1/x?connect_timeout=1", "TEATREE_STORE_URL=" + filepath.Join(dir, "objects")}
	args := func(s string) []string { return []string{"--args", s} }
	cases := []teactlCase{
		// Model names: dots, wildcards, spaces, unicode, case.
		{[]string{"submit", "shop.eu", "append"}, 2, "not a DNS label"},
		{[]string{"submit", "*", "append"}, 2, "not a DNS label"},
		{[]string{"submit", ">", "append"}, 2, "not a DNS label"},
		{[]string{"submit", "a b", "append"}, 2, "not a DNS label"},
		{[]string{"submit", "café", "append"}, 2, "not a DNS label"},
		{[]string{"submit", "Shop", "append"}, 2, "not a DNS label"},
		{[]string{"submit", "", "append"}, 2, "model id is empty"},
		{[]string{"watch", "shop.>"}, 2, "not a DNS label"},
		{[]string{"append", "a*", "t", csv}, 2, "not a DNS label"},
		// Malformed and wrong-typed args.
		{append([]string{"submit", "shop", "append"}, args("{")...), 2, "--args must be a JSON object"},
		{append([]string{"submit", "shop", "append"}, args("[1]")...), 2, "--args must be a JSON object"},
		{append([]string{"submit", "shop", "append"}, args("null")...), 2, "--args must be a JSON object"},
		{append([]string{"submit", "shop", "append"}, args(`{"table":7,"rows":[{"id":1}]}`)...), 2, "table must be a string"},
		{append([]string{"submit", "shop", "append"}, args(`{"table":"t","rows":[{"id\u0000":1}]}`)...), 2, "NUL"},
		{append([]string{"submit", "shop", "explode"}, args("{}")...), 2, "unknown function"},
		{append([]string{"submit", "shop", "append", "--id", "a b; DROP"}, args(`{"table":"t","rows":[{"id":1}]}`)...), 2, "may hold only"},
		// SQL in identifiers, and refresh queries that reach outside.
		{append([]string{"submit", "shop", "append"}, args(`{"table":"t; DROP TABLE t","rows":[{"id":1}]}`)...), 2, "not a valid table name"},
		{append([]string{"submit", "shop", "create_table"}, args(`{"table":"w","columns":[{"name":"a","type":"INT; DROP TABLE t"}]}`)...), 2, "has the character ';'"},
		{append([]string{"submit", "shop", "refresh"}, args(`{"table":"d","query":"COPY t TO '/tmp/leak.csv'"}`)...), 2, "one SELECT statement"},
		{append([]string{"submit", "shop", "refresh"}, args(`{"table":"d","query":"SELECT * FROM read_csv('/etc/passwd')"}`)...), 2, "read_csv()"},
		{append([]string{"submit", "shop", "refresh"}, args(`{"table":"d","query":"ATTACH 'x.db'"}`)...), 2, "one SELECT statement"},
		{append([]string{"submit", "shop", "refresh"}, args(`{"table":"d","query":"INSTALL httpfs"}`)...), 2, "one SELECT statement"},
		{append([]string{"submit", "shop", "refresh"}, args(`{"table":"d","query":"SELECT 1; DROP TABLE t"}`)...), 2, "one SELECT statement"},
		{append([]string{"submit", "shop", "sql"}, args(`{"sql":"COPY t TO '/tmp/leak.csv'"}`)...), 2, "COPY"},
		{[]string{"query", "shop", "DELETE FROM t"}, 2, "one SELECT statement"},
		// Files and rows.
		{append([]string{"submit", "shop", "append", "--rows", bigRows}, args(`{"table":"t"}`)...), 2, "stage large data"},
		{append([]string{"submit", "shop", "append", "--rows", notRows}, args(`{"table":"t"}`)...), 2, "line 2 is not a JSON object"},
		{append([]string{"submit", "shop", "append", "--rows", longLine}, args(`{"table":"t"}`)...), 2, "--rows"},
		{append([]string{"submit", "shop", "append", "--rows", filepath.Join(dir, "absent.json")}, args(`{"table":"t"}`)...), 2, "--rows"},
		{[]string{"append", "shop", "t", xlsx}, 2, "is not a Parquet, Arrow IPC, CSV, JSON or NDJSON file"},
		{[]string{"append", "shop", "t", filepath.Join(dir, "absent.csv")}, 2, "no such file"},
		{[]string{"append", "shop", "t", dir, "--format", "csv"}, 2, "is a directory"},
		{[]string{"append", "shop", "t; DROP TABLE t", csv}, 2, "not a valid table name"},
		{[]string{"append", "shop", "t", nl}, 2, "control character"},
	}
	for _, tc := range cases {
		out, errOut, code := runTeactl(t, time.Minute, env, tc.args...)
		name := strings.Join(tc.args, " ")
		if len(name) > 120 {
			name = name[:120] + "…"
		}
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("teactl %q: exit %d, stderr %.300q; want exit %d and %q (stdout %.200q)", name, code, errOut, tc.code, tc.msg, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "objects")); err == nil {
		t.Errorf("a refused command wrote to the object store")
	}
}

// TestHostileInputThroughStack: bad requests that only the service can
// judge, through teactl and the whole dev stack: bad staged files and
// values fail (exit 3), sql on a model without it is rejected (exit 4),
// values that look like SQL are stored literally, and the model's queue
// keeps applying good requests.
func TestHostileInputThroughStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	d := startDev(t, stackDir(t))
	write := fileWriter(t, t.TempDir())
	good := write("good.parquet", parquetFile(t, "SELECT 100::BIGINT AS id, 'parquet' AS v"))
	goodBytes, _ := os.ReadFile(good)
	truncated := write("truncated.parquet", goodBytes[:len(goodBytes)/2])
	notParquet := write("text.parquet", []byte("id,v\n1,a\n"))
	ragged := write("ragged.csv", []byte("id,v\n10,a\n11,b,surplus\n"))
	injection := `x'); DROP TABLE t; --`

	d.must(t, "model", "create", "hostile")
	d.must(t, "submit", "hostile", "create_table", "--wait", "--args", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}`)
	d.must(t, "submit", "hostile", "append", "--wait", "--args", `{"table":"t","rows":[{"id":1,"v":"x'); DROP TABLE t; --"}]}`)
	for _, tc := range []teactlCase{
		{[]string{"model", "create", "shop.*"}, 2, "not a DNS label"},
		{[]string{"submit", "hostile", "append", "--wait", "--args", `{"table":"t","rows":[{"id":"2 OR 1=1"}]}`}, 3, `JSON string "2 OR 1=1" does not go into`},
		{[]string{"submit", "hostile", "append", "--wait", "--args", `{"table":"t","rows":[{"id":2,"v\" = 'x'; --":"y"}]}`}, 3, "is not a column of table t"},
		{[]string{"submit", "hostile", "append", "--wait", "--args", `{"table":"t","rows":[{"id":1,"v":"again"}]}`}, 3, "Duplicate key"},
		{[]string{"submit", "hostile", "sql", "--wait", "--args", `{"sql":"DELETE FROM t"}`}, 4, "not enabled"},
		{[]string{"append", "hostile", "t", truncated, "--wait"}, 3, `staged file "truncated.parquet" is not a valid Parquet file (format from its extension)`},
		{[]string{"append", "hostile", "t", notParquet, "--wait"}, 3, `staged file "text.parquet" is not a valid Parquet file`},
		{[]string{"append", "hostile", "t", ragged, "--wait"}, 3, `staged file "ragged.csv" is not a valid CSV file`},
		{[]string{"append", "hostile", "fresh", ragged, "--wait"}, 3, `staged file "ragged.csv" is not a valid CSV file`},
		{[]string{"append", "hostile", "t", notParquet, "--format", "parquet", "--wait"}, 3, "(format given by the request)"},
		{[]string{"query", "hostile", "SELECT * FROM read_csv('/etc/passwd')"}, 2, ""},
	} {
		out, errOut, code := d.teactl(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("teactl %s: exit %d, stderr %.300q; want exit %d and %q (stdout %.200q)", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg, out)
		}
		if strings.Contains(out, "root:") {
			t.Errorf("teactl %s printed /etc/passwd", strings.Join(tc.args, " "))
		}
	}
	// The queue keeps going: good requests after the bad ones apply.
	d.must(t, "append", "hostile", "t", good, "--wait")
	d.must(t, "submit", "hostile", "update", "--wait", "--args", `{"table":"t","set":{"v":`+jsonString(injection+"!")+`},"where":[{"column":"v","op":"=","value":`+jsonString(injection)+`}]}`)
	out := d.must(t, "query", "hostile", "SELECT id, v FROM t ORDER BY id", "--format", "csv")
	want := "id,v\n1,x'); DROP TABLE t; --!\n100,parquet\n"
	if out != want {
		t.Errorf("table t holds\n%s\nwant\n%s", out, want)
	}
	if out := d.must(t, "query", "hostile", "SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = 'main'", "--format", "csv"); out != "n\n1\n" {
		t.Errorf("tables in the snapshot: %q, want only t", out)
	}
	d.stop(t)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// parquetFile returns the result of query as Parquet bytes, written by an
// in-memory DuckDB.
func parquetFile(t *testing.T, query string) []byte {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := filepath.Join(t.TempDir(), "f.parquet")
	if _, err := db.Exec("COPY (" + query + ") TO '" + p + "' (FORMAT parquet)"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fileWriter returns a function that writes a file into dir and returns
// its path.
func fileWriter(t *testing.T, dir string) func(name string, data []byte) string {
	return func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
}
