package functions

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/model"
)

// createT creates t(id BIGINT primary key, v VARCHAR, n INTEGER).
func createT(m *testModel) {
	m.t.Helper()
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"},{"name":"n","type":"INTEGER"}],"primary_key":["id"]}`)
}

func wantRows(t *testing.T, m *testModel, q string, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, m.rows(q)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", q, diff)
	}
}

func checkResult(t *testing.T, got, want Result) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Result (-want +got):\n%s", diff)
	}
}

func TestCreateTable(t *testing.T) {
	m := newModel(t)
	res := m.mustApply("create_table", `{"table":"Sales","columns":[
		{"name":"day","type":"DATE","not_null":true},
		{"name":"store id","type":"VARCHAR"},
		{"name":"amount","type":"DECIMAL(18,2)"},
		{"name":"tags","type":"VARCHAR[]"},
		{"name":"attrs","type":"STRUCT(a INTEGER, b VARCHAR)"},
		{"name":"m","type":"MAP(VARCHAR, BIGINT)"},
		{"name":"doc","type":"JSON"},
		{"name":"ts","type":"TIMESTAMP WITH TIME ZONE"}],
		"primary_key":["DAY","store id"]}`)
	checkResult(t, res, Result{Tables: []string{"Sales"}, Replaced: true})
	wantRows(t, m, `SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE table_name = 'Sales' ORDER BY column_index`,
		"day|DATE|false", "store id|VARCHAR|false", "amount|DECIMAL(18,2)|true", "tags|VARCHAR[]|true",
		"attrs|STRUCT(a INTEGER, b VARCHAR)|true", "m|MAP(VARCHAR, BIGINT)|true", "doc|JSON|true", "ts|TIMESTAMP WITH TIME ZONE|true")
	wantRows(t, m, `SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = 'Sales' AND constraint_type = 'PRIMARY KEY'`, "[day store id]")

	// An existing table: an error, or nothing with if_not_exists.
	m.applyErr("create_table", `{"table":"sales","columns":[{"name":"x","type":"INTEGER"}]}`, `exists already with columns ("day" DATE`)
	res = m.mustApply("create_table", `{"table":"sales","columns":[{"name":"x","type":"INTEGER"}],"if_not_exists":true}`)
	checkResult(t, res, Result{})
	wantRows(t, m, `SELECT count(*) FROM duckdb_columns() WHERE table_name = 'Sales'`, "8")
}

func TestAppendRows(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[
		{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"},{"name":"h","type":"HUGEINT"},
		{"name":"d","type":"DECIMAL(38,10)"},{"name":"f","type":"DOUBLE"},{"name":"b","type":"BOOLEAN"},
		{"name":"j","type":"JSON"},{"name":"l","type":"INTEGER[]"},{"name":"s","type":"STRUCT(a INTEGER, b VARCHAR)"},
		{"name":"ts","type":"TIMESTAMP"},{"name":"Mixed Case","type":"VARCHAR"}]}`)
	m.exec(`ALTER TABLE t ALTER COLUMN v SET DEFAULT 'dflt'`)
	rows := `[
		{"id":9223372036854775807,"v":"'; DROP TABLE t; --","h":170141183460469231731687303715884105727,"d":12345678901234567890.0123456789,"f":1.5e300,"b":true,
		 "j":{"k":[1,2,{"x":null}]},"l":[1,2,3],"s":{"a":1,"b":"x"},"ts":"2024-05-01 12:34:56.789","mixed case":"ci"},
		{"id":-9223372036854775808,"v":null},
		{"id":3},
		{"ID":4,"V":"Robert\"); DROP TABLE t;--","l":[],"j":"a string"},
		{"id":6,"j":5.50}]`
	res := m.mustApply("append", `{"table":"T","rows":`+rows+`}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 5, Appended: true})
	wantRows(t, m, `SELECT id, v, h, d, f, b, j::VARCHAR, l, s, ts, "Mixed Case" FROM t ORDER BY id`,
		"-9223372036854775808|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
		"3|dflt|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
		`4|Robert"); DROP TABLE t;--|NULL|NULL|NULL|NULL|"a string"|[]|NULL|NULL|NULL`,
		`6|dflt|NULL|NULL|NULL|NULL|5.50|NULL|NULL|NULL|NULL`,
		`9223372036854775807|'; DROP TABLE t; --|170141183460469231731687303715884105727|12345678901234567890.0123456789|1.5e+300|true|{"k":[1,2,{"x":null}]}|[1 2 3]|map[a:1 b:x]|2024-05-01 12:34:56.789 +0000 UTC|ci`)

	// Strings are stored verbatim: quotes, newlines, NUL, unicode, 64 KiB.
	big := strings.Repeat("é'\"\\\n\x00", 13000)[:65000]
	m.mustApply("append", mustJSON(t, map[string]any{"table": "t", "rows": []any{map[string]any{"id": 5, "v": big}}}))
	if got := m.rows(`SELECT v = ?, strlen(v) FROM t WHERE id = 5`, big); !cmp.Equal(got, []string{"true|65000"}) {
		t.Errorf("64 KiB string: %v", got)
	}
}

func TestAppendRowsChunks(t *testing.T) {
	m := newModel(t)
	createT(m)
	// 2,500 rows in three column shapes: several statements, one request.
	var rows []map[string]any
	for i := range 2500 {
		r := map[string]any{"id": i}
		switch i % 3 {
		case 1:
			r["v"] = fmt.Sprint("v", i)
		case 2:
			r["v"], r["n"] = "x", i
		}
		rows = append(rows, r)
	}
	res := m.mustApply("append", mustJSON(t, map[string]any{"table": "t", "rows": rows}))
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 2500, Appended: true})
	wantRows(t, m, `SELECT count(*), count(v), count(n), sum(id) FROM t`, "2500|1666|833|3123750")

	// 100 columns × 1,000 rows: chunks bounded by parameters too.
	cols := make([]string, 100)
	for i := range cols {
		cols[i] = fmt.Sprintf(`{"name":"c%d","type":"INTEGER"}`, i)
	}
	m.mustApply("create_table", `{"table":"wide","columns":[`+strings.Join(cols, ",")+`]}`)
	var wide []map[string]any
	for i := range 1000 {
		r := map[string]any{}
		for c := range 100 {
			r[fmt.Sprint("c", c)] = i
		}
		wide = append(wide, r)
	}
	res = m.mustApply("append", mustJSON(t, map[string]any{"table": "wide", "rows": wide}))
	checkResult(t, res, Result{Tables: []string{"wide"}, Rows: 1000, Appended: true})
	wantRows(t, m, `SELECT count(*), sum(c99) FROM wide`, "1000|499500")
}

func TestUpsert(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a","n":10},{"id":2,"v":"b","n":20}]}`)
	res := m.mustApply("upsert", `{"table":"t","rows":[
		{"id":1,"v":"A"},
		{"id":3,"v":"c","n":30},
		{"id":3,"n":31},
		{"id":2}]}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 3})
	// id 1: v updated, n kept; id 3: inserted then updated (the later row
	// wins); id 2: key only, unchanged.
	wantRows(t, m, `SELECT id, v, n FROM t ORDER BY id`, "1|A|10", "2|b|20", "3|c|31")

	// Composite key.
	m.mustApply("create_table", `{"table":"kv","columns":[{"name":"k1","type":"VARCHAR"},{"name":"k2","type":"INTEGER"},{"name":"v","type":"DOUBLE"}],"primary_key":["k1","k2"]}`)
	m.mustApply("upsert", `{"table":"kv","rows":[{"k1":"a","k2":1,"v":1},{"k1":"a","k2":2,"v":2},{"k1":"a","k2":1,"v":3}]}`)
	wantRows(t, m, `SELECT k1, k2, v FROM kv ORDER BY ALL`, "a|1|3", "a|2|2")

	m.mustApply("create_table", `{"table":"nokey","columns":[{"name":"id","type":"INTEGER"}]}`)
	m.applyErr("upsert", `{"table":"nokey","rows":[{"id":1}]}`, "has no primary key")
	m.applyErr("upsert", `{"table":"t","rows":[{"id":9,"v":"x"},{"v":"y"}]}`, `row 1 has no value for primary-key column "id"`)
	m.applyErr("upsert", `{"table":"t","rows":[{"id":9,"w":"x"}]}`, `row 0: key "w" is not a column of table t`)
	wantRows(t, m, `SELECT count(*) FROM t`, "3")
}

func TestUpdateDelete(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[
		{"id":1,"v":"apple","n":1},{"id":2,"v":"banana","n":2},{"id":3,"v":"cherry","n":3},
		{"id":4,"v":null,"n":4},{"id":5,"v":"'; DROP TABLE t; --","n":5}]}`)
	for _, tc := range []struct {
		where string
		want  []string // ids matched
	}{
		{`{"column":"id","op":"=","value":1}`, []string{"1"}},
		{`{"column":"id","op":"!=","value":1}`, []string{"2", "3", "4", "5"}},
		{`{"column":"id","op":"<","value":2}`, []string{"1"}},
		{`{"column":"id","op":"<=","value":2}`, []string{"1", "2"}},
		{`{"column":"id","op":">","value":4}`, []string{"5"}},
		{`{"column":"id","op":">=","value":"4"}`, []string{"4", "5"}},
		{`{"column":"id","op":"in","value":[1,3,99]}`, []string{"1", "3"}},
		{`{"column":"id","op":"not_in","value":[1,3]}`, []string{"2", "4", "5"}},
		{`{"column":"v","op":"is_null"}`, []string{"4"}},
		{`{"column":"v","op":"is_not_null"}`, []string{"1", "2", "3", "5"}},
		{`{"column":"v","op":"like","value":"%an%"}`, []string{"2"}},
		{`{"column":"v","op":"=","value":"'; DROP TABLE t; --"}`, []string{"5"}},
		{`{"column":"V","op":"in","value":["apple","cherry"]},{"column":"id","op":">","value":1.5}`, []string{"3"}},
		{`{"column":"id","op":"<","value":1.5}`, []string{"1"}},
		{`{"column":"id","op":">","value":4.000000000000000000000000000001}`, []string{"5"}},
		{`{"column":"id","op":"<=","value":2e0}`, []string{"1", "2"}},
		{`{"column":"id","op":"in","value":[2.0,3,"4",99999999999999999999]}`, []string{"2", "3", "4"}},
		{`{"column":"id","op":"<","value":-99999999999999999999}`, nil},
	} {
		m.mustApply("update", `{"table":"t","set":{"n":0},"all":true}`)
		res := m.mustApply("update", `{"table":"t","set":{"n":1},"where":[`+tc.where+`]}`)
		checkResult(t, res, Result{Tables: []string{"t"}, Rows: int64(len(tc.want))})
		got := m.rows(`SELECT id FROM t WHERE n = 1 ORDER BY id`)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("where %s (-want +got):\n%s", tc.where, diff)
		}
	}
	// set: several columns, NULL, JSON text; values stored verbatim.
	res := m.mustApply("update", `{"table":"t","set":{"v":"x'); DELETE FROM t; --","n":null},"where":[{"column":"id","op":"=","value":2}]}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 1})
	wantRows(t, m, `SELECT v, n FROM t WHERE id = 2`, "x'); DELETE FROM t; --|NULL")
	// No match: the table is still listed, no row changed.
	res = m.mustApply("update", `{"table":"t","set":{"n":7},"where":[{"column":"id","op":"=","value":99}]}`)
	checkResult(t, res, Result{Tables: []string{"t"}})

	res = m.mustApply("delete", `{"table":"t","where":[{"column":"id","op":"in","value":[1,2]}]}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 2})
	wantRows(t, m, `SELECT id FROM t ORDER BY id`, "3", "4", "5")
	res = m.mustApply("delete", `{"table":"t","all":true}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 3})
	wantRows(t, m, `SELECT count(*) FROM t`, "0")
}

func TestRefresh(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"sales","columns":[{"name":"day","type":"DATE"},{"name":"store","type":"VARCHAR"},{"name":"amount","type":"DECIMAL(18,2)"}]}`)
	m.mustApply("append", `{"table":"sales","rows":[
		{"day":"2024-01-05","store":"a","amount":"10.50"},{"day":"2024-01-20","store":"a","amount":1.25},
		{"day":"2024-02-01","store":"b","amount":3}]}`)
	q := `{"table":"monthly","query":"SELECT strftime(date_trunc('month', day), '%Y-%m') AS month, store, sum(amount)::VARCHAR AS amount FROM sales GROUP BY ALL ORDER BY ALL -- trailing comment"}`
	res := m.mustApply("refresh", q)
	checkResult(t, res, Result{Tables: []string{"monthly"}, Rows: 2, Replaced: true})
	wantRows(t, m, `SELECT * FROM monthly ORDER BY ALL`, "2024-01|a|11.75", "2024-02|b|3.00")

	// Refresh again after new data: the table is replaced.
	m.mustApply("append", `{"table":"sales","rows":[{"day":"2024-02-02","store":"b","amount":1}]}`)
	m.mustApply("refresh", q)
	wantRows(t, m, `SELECT * FROM monthly ORDER BY ALL`, "2024-01|a|11.75", "2024-02|b|4.00")

	// Other query shapes: WITH, FROM-first, VALUES, set operations, main.
	for _, query := range []string{
		"WITH x AS (SELECT store, count(*) AS n FROM sales GROUP BY store) FROM x ORDER BY store",
		"FROM main.sales SELECT store, count(*) AS n GROUP BY store ORDER BY store",
		"VALUES ('a', 2), ('b', 2)",
		"SELECT 'a' AS store, 2 AS n UNION ALL SELECT 'b', 2;",
		"SELECT store, (SELECT count(*) FROM sales s2 WHERE s2.store = s.store) AS n FROM sales s GROUP BY store",
	} {
		m.mustApply("refresh", mustJSON(t, map[string]string{"table": "counts", "query": query}))
		wantRows(t, m, `SELECT * FROM counts ORDER BY ALL`, "a|2", "b|2")
	}

	// The derived table may read itself.
	m.mustApply("refresh", `{"table":"counts","query":"SELECT store, n * 10 AS n FROM counts"}`)
	wantRows(t, m, `SELECT * FROM counts ORDER BY ALL`, "a|20", "b|20")

	m.applyErr("refresh", `{"table":"x","query":"SELECT * FROM missing"}`, "Table with name missing does not exist")
	m.applyErr("refresh", `{"table":"x","query":"SELECT * FROM read_csv('/etc/passwd')"}`, "read_csv()")
}

func TestDropTable(t *testing.T) {
	m := newModel(t)
	createT(m)
	checkResult(t, m.mustApply("drop_table", `{"table":"T"}`), Result{Tables: []string{"t"}, Replaced: true})
	wantRows(t, m, `SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'`, "0")
	m.applyErr("drop_table", `{"table":"t"}`, "does not exist")
	checkResult(t, m.mustApply("drop_table", `{"table":"t","if_exists":true}`), Result{})
}

func TestSQL(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a"},{"id":2,"v":"b"}]}`)

	_, err := m.apply("sql", `{"sql":"DELETE FROM t"}`)
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("sql with AllowSQL false: %v", err)
	}
	wantRows(t, m, `SELECT count(*) FROM t`, "2")

	m.allowSQL = true
	checkResult(t, m.mustApply("sql", `{"sql":"UPDATE t SET v = upper(v) WHERE id > 1"}`), Result{AllTables: true, Rows: 1})
	wantRows(t, m, `SELECT v FROM t ORDER BY id`, "a", "B")
	checkResult(t, m.mustApply("sql", `{"sql":"ALTER TABLE t ADD COLUMN note VARCHAR DEFAULT 'n'"}`), Result{AllTables: true})
	m.mustApply("sql", `{"sql":"CREATE TABLE t2 AS SELECT id * 2 AS id FROM t"}`)
	m.mustApply("sql", `{"sql":"CREATE VIEW v AS SELECT * FROM t2"}`)
	m.mustApply("sql", `{"sql":"INSERT INTO t (id, v) SELECT id + 10, 'x' FROM t2; "}`)
	wantRows(t, m, `SELECT id, v, note FROM t ORDER BY id`, "1|a|n", "2|B|n", "12|x|n", "14|x|n")

	// Refused on the model itself: what the private parser could not bind.
	m.applyErr("sql", `{"sql":"DELETE FROM t WHERE id = ?"}`, "parameters")
	m.applyErr("sql", `{"sql":"INSERT INTO t (id, n) VALUES (99, 'notanumber')"}`, "Could not convert")
	m.applyErr("sql", `{"sql":"SELECT * FROM read_csv('/etc/passwd')"}`, "files")
	wantRows(t, m, `SELECT count(*) FROM t`, "4")
}

// TestCheckPrepared covers the statement-type gate Apply uses on the model.
func TestCheckPrepared(t *testing.T) {
	for _, typ := range []duckdb.StmtType{duckdb.STATEMENT_TYPE_COPY, duckdb.STATEMENT_TYPE_ATTACH, duckdb.STATEMENT_TYPE_DETACH,
		duckdb.STATEMENT_TYPE_LOAD, duckdb.STATEMENT_TYPE_SET, duckdb.STATEMENT_TYPE_PRAGMA, duckdb.STATEMENT_TYPE_TRANSACTION,
		duckdb.STATEMENT_TYPE_EXPORT, duckdb.STATEMENT_TYPE_CALL, duckdb.STATEMENT_TYPE_INVALID, duckdb.STATEMENT_TYPE_MULTI} {
		if err := checkPrepared(prepared{Type: typ}); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("statement type %d: %v, want ErrInvalid", typ, err)
		}
	}
	for _, typ := range []duckdb.StmtType{duckdb.STATEMENT_TYPE_INSERT, duckdb.STATEMENT_TYPE_UPDATE, duckdb.STATEMENT_TYPE_DELETE,
		duckdb.STATEMENT_TYPE_CREATE, duckdb.STATEMENT_TYPE_ALTER, duckdb.STATEMENT_TYPE_DROP, duckdb.STATEMENT_TYPE_SELECT} {
		if err := checkPrepared(prepared{Type: typ}); err != nil {
			t.Errorf("statement type %d: %v", typ, err)
		}
	}
}

// TestApplyErrors: Apply refuses what only the model can tell, with
// errors wrapping model.ErrInvalid, and leaves the table as it was.
func TestApplyErrors(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a","n":1}]}`)
	for _, tc := range []struct{ fn, args, want string }{
		{"append", `{"table":"missing","rows":[{"id":1}]}`, `table "missing" does not exist`},
		{"append", `{"table":"t","rows":[{"id":2,"x":1}]}`, `row 0: key "x" is not a column of table t: its columns are ("id" BIGINT, "v" VARCHAR, "n" INTEGER)`},
		{"append", `{"table":"t","rows":[{"id":2,"v":"a","V":"b"}]}`, `both name column "v"`},
		{"append", `{"table":"t","rows":[{"id":2,"n":"abc"}]}`, `row 0: column "n" (INTEGER): JSON string "abc" does not go into INTEGER`},
		{"append", `{"table":"t","rows":[{"id":2,"n":12345678901234567890}]}`, "JSON number 12345678901234567890 does not go into INTEGER: it is out of range (-2147483648 to 2147483647)"},
		{"append", `{"table":"t","rows":[{"id":2,"n":10000000000}]}`, "out of range"},
		{"append", `{"table":"t","rows":[{"id":"x"}]}`, `JSON string "x" does not go into BIGINT`},
		{"append", `{"table":"t","rows":[{"id":2,"n":[1]}]}`, "JSON array [1] does not go into INTEGER"},
		{"append", `{"table":"t","rows":[{"id":1}]}`, "Duplicate key"},
		{"append", `{"table":"t","rows":[{"id":null}]}`, "NOT NULL constraint failed"},
		{"append", `{"table":"t","rows":[{"v":"no id"}]}`, "NOT NULL constraint failed"},
		{"upsert", `{"table":"t","rows":[{"id":1,"n":"abc"}]}`, `JSON string "abc" does not go into INTEGER`},
		{"update", `{"table":"t","set":{"x":1},"all":true}`, `set column "x" is not a column of table t`},
		{"update", `{"table":"t","set":{"n":"abc"},"all":true}`, `set column "n" (INTEGER): JSON string "abc" does not go into INTEGER`},
		{"update", `{"table":"t","set":{"v":"x"},"where":[{"column":"nope","op":"=","value":1}]}`, `where[0].column "nope" is not a column`},
		{"update", `{"table":"t","set":{"id":null},"all":true}`, "NOT NULL constraint failed"},
		{"delete", `{"table":"t","where":[{"column":"id","op":"=","value":"abc"}]}`, "Could not convert"},
		{"delete", `{"table":"missing","all":true}`, `table "missing" does not exist`},
		{"drop_table", `{"table":"missing"}`, "does not exist"},
		{"create_table", `{"table":"T","columns":[{"name":"a","type":"INTEGER"}]}`, "exists already"},
		{"refresh", `{"table":"d","query":"SELECT nope FROM t"}`, `Referenced column "nope" not found`},
		{"refresh", `{"table":"d","query":"SELECT 1/0 AS x, error('boom') AS y"}`, "boom"},
	} {
		before := m.rows(`SELECT * FROM t ORDER BY id`)
		m.applyErr(tc.fn, tc.args, tc.want)
		if diff := cmp.Diff(before, m.rows(`SELECT * FROM t ORDER BY id`)); diff != "" {
			t.Errorf("%s %s changed t (-before +after):\n%s", tc.fn, tc.args, diff)
		}
	}
}

// TestRollbackLeavesTableUnchanged: a batch whose last request fails is
// rolled back whole, and applying the batch again without the failed
// request works: the group-commit protocol of the db-manager.
func TestRollbackLeavesTableUnchanged(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a"}]}`)
	before := m.rows(`SELECT * FROM t ORDER BY id`)

	// The failing request's first chunk (1,000 rows) is inserted before its
	// second chunk fails: the rollback removes both, and the earlier
	// requests of the batch too.
	var rows []map[string]any
	for i := range 1500 {
		rows = append(rows, map[string]any{"id": 100 + i, "n": i})
	}
	rows[1400]["n"] = "not a number"
	bad := mustJSON(t, map[string]any{"table": "t", "rows": rows})
	good1 := request{"append", `{"table":"t","rows":[{"id":2,"v":"b"}]}`}
	good2 := request{"update", `{"table":"t","set":{"v":"A"},"where":[{"column":"id","op":"=","value":1}]}`}
	good3 := request{"create_table", `{"table":"u","columns":[{"name":"x","type":"INTEGER"}]}`}
	_, err := m.applyBatch(good1, good2, good3, request{"append", bad})
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("batch: %v, want ErrInvalid", err)
	}
	if diff := cmp.Diff(before, m.rows(`SELECT * FROM t ORDER BY id`)); diff != "" {
		t.Errorf("t changed by a rolled-back batch (-before +after):\n%s", diff)
	}
	wantRows(t, m, `SELECT count(*) FROM duckdb_tables() WHERE table_name = 'u'`, "0")

	// The same connection works after the rollback; the batch without the
	// failed request commits.
	if _, err := m.applyBatch(good1, good2, good3); err != nil {
		t.Fatal(err)
	}
	wantRows(t, m, `SELECT id, v FROM t ORDER BY id`, "1|A", "2|b")
}

// TestSchemaChangesInOneBatch applies, in one transaction with one
// TableCache, data functions around every function that changes a
// table's columns: each must see the columns as they are now.
func TestSchemaChangesInOneBatch(t *testing.T) {
	m := newModel(t)
	m.allowSQL = true
	m.put("staging/r/t.csv", []byte("id,w\n5,five\n"))
	_, err := m.applyBatch(
		request{"create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"}]}`},
		request{"append", `{"table":"t","rows":[{"id":1}]}`},
		request{"drop_table", `{"table":"t"}`},
		request{"create_table", `{"table":"T","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}`},
		request{"append", `{"table":"t","rows":[{"id":2,"v":"two"}]}`},
		request{"upsert", `{"table":"t","rows":[{"id":2,"v":"deux"}]}`},
		request{"refresh", `{"table":"t","query":"SELECT id, v, id * 10 AS n FROM t"}`},
		request{"append", `{"table":"t","rows":[{"id":3,"v":"three","n":30}]}`},
		request{"sql", `{"sql":"ALTER TABLE t ADD COLUMN x INTEGER"}`},
		request{"update", `{"table":"t","set":{"x":7},"where":[{"column":"id","op":"=","value":3}]}`},
		request{"drop_table", `{"table":"t"}`},
		request{"append", `{"table":"t","payload":{"uri":"staging/r/t.csv"}}`},
		request{"append", `{"table":"t","rows":[{"id":6,"w":"six"}]}`},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := m.rows("SELECT id || ':' || w FROM t ORDER BY id")
	if want := []string{"5:five", "6:six"}; !slices.Equal(got, want) {
		t.Errorf("t = %v, want %v", got, want)
	}
}
