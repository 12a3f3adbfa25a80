package functions

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/teatree/teatree/model"
)

// badArg is args a function's Validate must refuse.
type badArg struct {
	fn, args string
	want     string // substring of the error
	// schemaOK: the JSON schema cannot see the problem (it needs DuckDB's
	// parser, or is not expressible in JSON Schema).
	schemaOK bool
}

var (
	long300  = strings.Repeat("c", 300)
	long64   = strings.Repeat("t", 64)
	longType = "DECIMAL(18,2)" + strings.Repeat(" ", 2000)
	deep     = strings.Repeat("[", 70) + strings.Repeat("]", 70)
	hugeName = strings.Repeat("x", 1<<20)
	manyCols = func() string {
		cs := make([]string, 5000)
		for i := range cs {
			cs[i] = fmt.Sprintf(`{"name":"c%d","type":"INTEGER"}`, i)
		}
		return `{"table":"t","columns":[` + strings.Join(cs, ",") + `]}`
	}()
)

var badArgs = []badArg{
	// Malformed JSON and the args envelope.
	{"append", ``, "args are empty", false},
	{"append", `null`, "must be a JSON object", false},
	{"append", `[]`, "must be a JSON object", false},
	{"append", `"t"`, "must be a JSON object", false},
	{"append", `{`, "not valid JSON", false},
	{"append", `{"table":"t","rows":[{"id":1}]`, "not valid JSON", false},
	{"append", `{"table":"t","rows":[{"id":1}]} {}`, "data after the JSON object", false},
	{"append", `{"table":"t","rows":[{"id":1}],}`, "not valid JSON", false},
	{"append", `{"table":"t","rows":[{"id":1}],"extra":1}`, `unknown field "extra"`, false},
	{"append", `{"TABLE":"t","rows":[{"id":1}]}`, `unknown field "TABLE"`, false},
	{"append", `{"table":"t","table":"u","rows":[{"id":1}]}`, "twice", true},
	{"append", `{"table":1,"rows":[{"id":1}]}`, "table must be a string", false},
	{"append", `{"table":null,"rows":[{"id":1}]}`, "must not be null", false},
	{"append", `{"table":"t","rows":{"id":1}}`, "must be an array", false},
	{"append", `{"table":"t","rows":[1,2]}`, "must be an object", false},
	{"append", `{"table":"t","rows":null}`, "must not be null", false},
	{"append", `{"table":"t","rows":[]}`, "rows is empty", false},
	{"append", `{"table":"t","rows":[{}]}`, "empty object", false},
	{"append", `{"table":"t"}`, "give rows", false},
	{"append", `{"table":"t","rows":[{"id":1}],"payload":{"uri":"staging/r/f.parquet"}}`, "not several", false},
	{"append", `{"table":"t","rows":[{"id":1,"id":2}]}`, "twice", true},
	{"append", `{"table":"t","rows":[{"":1}]}`, "is empty", false},
	{"append", `{"table":"t","rows":[{"a\u0000b":1}]}`, "NUL", false},
	{"append", `{"table":"t","rows":[{"` + long300 + `":1}]}`, "bytes long", false},
	{"append", `{"table":"t","rows":[{"id":1}],"create":true}`, "payload only", false},
	{"append", `{"table":"t","rows":[{"v":` + deep + `}]}`, "nests deeper", true},
	// Payload references.
	{"append", `{"table":"t","payload":{"uri":"/etc/passwd","format":"csv"}}`, "staged object", false},
	{"append", `{"table":"t","payload":{"uri":"s3://bucket/f.parquet"}}`, "staged object", false},
	{"append", `{"table":"t","payload":{"uri":"staging/../etc/passwd.csv"}}`, "clean object key", true},
	{"append", `{"table":"t","payload":{"uri":"staging/r//f.csv"}}`, "clean object key", true},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f\nx.csv"}}`, "control character", true},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.xlsx"}}`, "no known file extension", true},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f","format":"xlsx"}}`, "not one of parquet", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.parquet","delimiter":";"}}`, "csv only", true},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.csv","delimiter":";;"}}`, "one printable", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.csv","delimiter":"\""}}`, "not a quote", true},
	{"append", `{"table":"t","payload":{"format":"csv"}}`, "staged object", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.parquet","format":""}}`, "payload.format is empty", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.csv","delimiter":""}}`, "payload.delimiter is empty", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.csv","path":"/etc/passwd"}}`, `unknown field "path"`, false},
	{"append", `{"table":"t","payload":"staging/r/f.csv"}`, "must be an object", false},
	{"append", `{"table":"t","payload":{"uri":"staging/r/f.csv"},"create":"no"}`, "create must be true or false", false},
	// Table names.
	{"create_table", `{"table":"","columns":[{"name":"a","type":"INTEGER"}]}`, "table is empty", false},
	{"create_table", `{"table":"1t","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"t; DROP TABLE x","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"t\"","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"main.t","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"tä","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"` + long64 + `","columns":[{"name":"a","type":"INTEGER"}]}`, "not a valid table name", false},
	{"create_table", `{"table":"_teatree_x","columns":[{"name":"a","type":"INTEGER"}]}`, "reserved", false},
	{"create_table", `{"table":"_TeaTree","columns":[{"name":"a","type":"INTEGER"}]}`, "reserved", false},
	{"drop_table", `{"table":"` + hugeName + `"}`, "not a valid table name", false},
	{"drop_table", `{"table":"_teatree"}`, "reserved", false},
	{"drop_table", `{}`, "table is empty", false},
	{"drop_table", `{"table":"t","if_exists":1}`, "if_exists must be true or false", false},
	// create_table columns and types.
	{"create_table", `{"table":"t"}`, "columns is empty", false},
	{"create_table", `{"table":"t","columns":[]}`, "columns is empty", false},
	{"create_table", `{"table":"t","columns":{"name":"a","type":"INTEGER"}}`, "must be an array", false},
	{"create_table", `{"table":"t","columns":[{"name":"a"}]}`, "is empty", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER; DROP TABLE t"}]}`, "has the character ';'", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"VARCHAR -- x"}]}`, "has the character '-'", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"VARCHAR /* x */"}]}`, "has the character '/'", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"VARCHAR DEFAULT 'x'"}]}`, `has the character '\''`, false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"VARCHAR\""}]}`, `has the character '"'`, false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER) , (b INTEGER"}]}`, "unbalanced", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER[)"}]}`, "unbalanced", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"NOTATYPE"}]}`, "not a DuckDB type", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER NOT NULL"}]}`, "not a DuckDB type", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER PRIMARY KEY"}]}`, "not a DuckDB type", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"DECIMAL(99,1)"}]}`, "not a DuckDB type", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"` + longType + `"}]}`, "bytes long", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER"},{"name":"A","type":"INTEGER"}]}`, "same name", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER"}],"primary_key":["b"]}`, "not one of the columns", true},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER"}],"primary_key":["a","a"]}`, "twice", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER","nullable":true}]}`, `unknown field "nullable"`, false},
	{"create_table", `{"table":"t","columns":[{"name":"a\u0000","type":"INTEGER"}]}`, "NUL", false},
	{"create_table", `{"table":"t","columns":[{"name":"a","type":"INTEGER"}],"if_not_exists":"yes"}`, "must be true or false", false},
	{"create_table", manyCols, "at most 4096", false},
	// where, set and all.
	{"delete", `{"table":"t"}`, "where is empty", false},
	{"delete", `{"table":"t","where":[]}`, "where is empty", false},
	{"delete", `{"table":"t","all":false}`, "where is empty", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"=","value":1}],"all":true}`, "not both", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"==","value":1}]}`, "not an op", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"; DROP TABLE t","value":1}]}`, "not an op", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"IN","value":[1]}]}`, "not an op", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"in","value":[]}]}`, "non-empty array", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"in","value":1}]}`, "non-empty array", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"not_in","value":[[1]]}]}`, "take strings, numbers and booleans", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"in","value":[null]}]}`, "take strings, numbers and booleans", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"is_null","value":null}]}`, "takes no value", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"="}]}`, "needs a value", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"=","value":null}]}`, "use op is_null", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"<","value":{"a":1}}]}`, "needs a string, number or boolean", false},
	{"delete", `{"table":"t","where":[{"column":"v","op":"like","value":5}]}`, "needs a string pattern", false},
	{"delete", `{"table":"t","where":[{"column":"","op":"is_null"}]}`, "is empty", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":"is_null","val":1}]}`, `unknown field "val"`, false},
	{"delete", `{"table":"t","where":{"column":"id","op":"is_null"}}`, "must be an array", false},
	{"delete", `{"table":"t","where":[{"column":"id","op":null}]}`, "must not be null", false},
	{"update", `{"table":"t","set":{},"where":[{"column":"id","op":"=","value":1}]}`, "set is empty", false},
	{"update", `{"table":"t","where":[{"column":"id","op":"=","value":1}]}`, "set is empty", false},
	{"update", `{"table":"t","set":{"v\u0000":1},"where":[{"column":"id","op":"=","value":1}]}`, "NUL", false},
	{"update", `{"table":"t","set":{"v":1}}`, "where is empty", false},
	{"update", `{"table":"t","set":{"v":1},"all":"true"}`, "all must be true or false", false},
	{"update", `{"table":"t","set":[1],"all":true}`, "must be an object", false},
	// refresh: one SELECT over the model's tables, nothing else.
	{"refresh", `{"table":"d","query":""}`, "query is empty", false},
	{"refresh", `{"table":"d","query":"  "}`, "query is empty", true},
	{"refresh", `{"table":"d"}`, "query is empty", false},
	{"refresh", `{"table":"d","query":"SELECT 1\u0000"}`, "NUL", false},
	{"refresh", `{"table":"d","query":"DELETE FROM t"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"COPY t TO 'x.csv'"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"COPY (SELECT 1) TO '/tmp/x.csv'"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"ATTACH 'x.db' AS y"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"INSTALL httpfs"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"EXPLAIN SELECT 1"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"CREATE TABLE x AS SELECT 1"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"SELECT 1; SELECT 2"}`, "2 statements", true},
	{"refresh", `{"table":"d","query":"SELECT 1; DROP TABLE t"}`, "one SELECT statement", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM read_csv('/etc/passwd')"}`, "read_csv()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM read_parquet(['staging/x/f.parquet'])"}`, "read_parquet()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM 'data.csv'"}`, "not a table name", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM glob('*')"}`, "glob()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM range(10)"}`, "range()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM query('SELECT 1')"}`, "query()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM duckdb_tables()"}`, "duckdb_tables()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM duckdb_tables"}`, "system views", true},
	{"refresh", `{"table":"d","query":"SELECT 1 WHERE (SELECT count(*) FROM read_text('x')) > 0"}`, "read_text()", true},
	{"refresh", `{"table":"d","query":"SELECT read_blob('x')"}`, "read_blob()", true},
	{"refresh", `{"table":"d","query":"SELECT current_setting('allowed_directories')"}`, "current_setting()", true},
	{"refresh", `{"table":"d","query":"SELECT nextval('s')"}`, "nextval()", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM _teatree.applied"}`, "schema main", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM \"_TEATREE\".applied"}`, "schema main", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM _teatree_applied"}`, "teatree's own", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM other.main.t"}`, "schema main", true},
	{"refresh", `{"table":"d","query":"SELECT * FROM information_schema.tables"}`, "schema main", true},
	{"refresh", `{"table":"d","query":"DESCRIBE t"}`, "DESCRIBE", true},
	{"refresh", `{"table":"d","query":"SHOW TABLES"}`, "DESCRIBE", true},
	{"refresh", `{"table":"d","query":"SUMMARIZE t"}`, "DESCRIBE", true},
	{"refresh", `{"table":"d","query":"SELECT $1"}`, "parameter", true},
	{"refresh", `{"table":"d","query":"SELEC 1"}`, "not valid SQL", true},
	{"refresh", `{"table":"d","query":"SELECT 1) ; DROP TABLE t; (SELECT 1"}`, "not valid SQL", true},
	{"refresh", `{"table":"_teatree_d","query":"SELECT 1"}`, "reserved", false},
	// sql: one allowed statement.
	{"sql", `{"sql":""}`, "sql is empty", false},
	{"sql", `{"sql":"-- only a comment"}`, "no statement", true},
	{"sql", `{"sql":"ATTACH 'x.db'"}`, "ATTACH", true},
	{"sql", `{"sql":"DETACH x"}`, "DETACH", true},
	{"sql", `{"sql":"INSTALL httpfs"}`, "INSTALL", true},
	{"sql", `{"sql":"LOAD httpfs"}`, "LOAD", true},
	{"sql", `{"sql":"FORCE INSTALL httpfs"}`, "FORCE", true},
	{"sql", `{"sql":"COPY t TO '/tmp/x.csv'"}`, "COPY", true},
	{"sql", `{"sql":"/* hi */ copy t FROM 'x.csv'"}`, "COPY", true},
	{"sql", `{"sql":"EXPORT DATABASE '/tmp/x'"}`, "EXPORT", true},
	{"sql", `{"sql":"IMPORT DATABASE '/tmp/x'"}`, "IMPORT", true},
	{"sql", `{"sql":"SET threads = 4"}`, "SET", true},
	{"sql", `{"sql":"RESET threads"}`, "RESET", true},
	{"sql", `{"sql":"PRAGMA threads = 4"}`, "PRAGMA", true},
	{"sql", `{"sql":"BEGIN TRANSACTION"}`, "BEGIN", true},
	{"sql", `{"sql":"COMMIT"}`, "COMMIT", true},
	{"sql", `{"sql":"ROLLBACK"}`, "ROLLBACK", true},
	{"sql", `{"sql":"CALL checkpoint()"}`, "CALL", true},
	{"sql", `{"sql":"CHECKPOINT"}`, "CHECKPOINT", true},
	{"sql", `{"sql":"USE memory"}`, "USE", true},
	{"sql", `{"sql":"UPDATE EXTENSIONS"}`, "UPDATE EXTENSIONS", true},
	{"sql", `{"sql":"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE"}`, "MERGE", true},
	{"sql", `{"sql":"SELECT 1; SELECT 2"}`, "more than one statement", true},
	{"sql", `{"sql":"DELETE FROM t; DROP TABLE t"}`, "more than one statement", true},
	{"sql", `{"sql":"DELETE FROM _teatree.applied"}`, "_teatree", true},
	{"sql", `{"sql":"DROP SCHEMA \"_TeaTree\" CASCADE"}`, "_teatree", true},
	{"sql", `{"sql":"SELECT ?"}`, "parameters", true},
	{"sql", `{"sql":"SELEC 1"}`, "not valid SQL", true},
	{"sql", `{"sql":"CREATE TABLE x AS SELECT * FROM read_csv('/etc/passwd')"}`, "files", true},
	{"sql", `{"sql":"SELECT 1","params":[1]}`, `unknown field "params"`, false},
	// upsert.
	{"upsert", `{"table":"t"}`, "rows is empty", false},
	{"upsert", `{"table":"t","rows":[{}]}`, "empty object", false},
	{"upsert", `{"table":"t","rows":[{"id":1}],"payload":{"uri":"staging/r/f.csv"}}`, `unknown field "payload"`, false},
}

func TestValidateRefuses(t *testing.T) {
	if len(badArgs) < 60 {
		t.Fatalf("only %d bad cases", len(badArgs))
	}
	for i, tc := range badArgs {
		f, err := Lookup(tc.fn)
		if err != nil {
			t.Fatal(err)
		}
		err = validate(f, json.RawMessage(tc.args))
		name := fmt.Sprintf("%d %s %.80s", i, tc.fn, tc.args)
		if err == nil {
			t.Errorf("%s: accepted, want an error containing %q", name, tc.want)
			continue
		}
		if !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: error %v does not wrap model.ErrInvalid", name, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not contain %q", name, err, tc.want)
		}
		if len(err.Error()) > 2000 {
			t.Errorf("%s: error is %d bytes long", name, len(err.Error()))
		}
	}
}

func TestValidateSelect(t *testing.T) {
	for _, ok := range []string{"SELECT 1", "FROM flights LIMIT 3", "WITH a AS (SELECT 1 x) SELECT * FROM a", "SELECT 1 UNION ALL SELECT 2", "VALUES (1), (2)"} {
		if err := ValidateSelect(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "DELETE FROM t", "SELECT 1; SELECT 2", "SELECT 1; DROP TABLE t", "CREATE TABLE x AS SELECT 1", "SELEC 1", "ATTACH 'x.db'", "COPY t TO 'x.csv'", "PRAGMA version", "SET threads = 1"} {
		err := ValidateSelect(bad)
		if !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%q: %v, want an ErrInvalid", bad, err)
		}
	}
}
