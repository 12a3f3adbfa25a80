package functions

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/teatree/teatree/model"
)

// sampleQuery makes three rows of (id BIGINT, v VARCHAR, amount
// DECIMAL(18,2), tags VARCHAR[], day DATE) starting at id.
const sampleQuery = `SELECT i::BIGINT AS id, 'v' || i AS v, (i * 1.25)::DECIMAL(18,2) AS amount, ['a', 'b'] AS tags, DATE '2024-01-01' + i::INTEGER AS day FROM range(%d, %d) r(i)`

func sample(from, to int) string { return fmt.Sprintf(sampleQuery, from, to) }

func TestAppendPayloadFormats(t *testing.T) {
	for _, tc := range []struct {
		name, ext, options string
		payloadExtra       string
	}{
		{"parquet", "parquet", "FORMAT parquet", `,"format":"parquet"`},
		{"parquet by extension", "parquet", "FORMAT parquet", ``},
		{"csv", "csv", "FORMAT csv, HEADER true", `,"format":"csv"`},
		{"csv semicolon", "txt", "FORMAT csv, HEADER true, DELIMITER ';'", `,"format":"csv","delimiter":";"`},
		{"tsv", "tsv", "FORMAT csv, HEADER true, DELIMITER '\t'", ``},
		{"json array", "json", "FORMAT json, ARRAY true", ``},
		{"ndjson", "ndjson", "FORMAT json", `,"format":"json"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t)
			uri1, uri2 := "staging/r1/f."+tc.ext, "staging/r2/f."+tc.ext
			m.copyTo(uri1, sample(0, 3), tc.options)
			m.copyTo(uri2, sample(3, 5), tc.options)

			// A missing table is created from the file's schema.
			res := m.mustApply("append", `{"table":"t","payload":{"uri":"`+uri1+`"`+tc.payloadExtra+`}}`)
			checkResult(t, res, Result{Tables: []string{"t"}, Rows: 3, Appended: true})
			// An existing table gets the rows BY NAME.
			res = m.mustApply("append", `{"table":"T","payload":{"uri":"`+uri2+`"`+tc.payloadExtra+`},"create":false}`)
			checkResult(t, res, Result{Tables: []string{"t"}, Rows: 2, Appended: true})
			// CSV and JSON have no DECIMAL: amount is a DOUBLE there.
			wantRows(t, m, `SELECT id, v, amount::DECIMAL(18,2)::VARCHAR, tags::VARCHAR, day::VARCHAR FROM t ORDER BY id`,
				"0|v0|0.00|[a, b]|2024-01-01", "1|v1|1.25|[a, b]|2024-01-02", "2|v2|2.50|[a, b]|2024-01-03",
				"3|v3|3.75|[a, b]|2024-01-04", "4|v4|5.00|[a, b]|2024-01-05")
			if got := strings.Join(m.fetched, " "); got != uri1+" "+uri2 {
				t.Errorf("fetched %s", got)
			}
		})
	}
}

func TestAppendPayloadIntoTypedTable(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"},{"name":"amount","type":"DECIMAL(18,2)"},{"name":"tags","type":"VARCHAR[]"},{"name":"day","type":"DATE"}],"primary_key":["id"]}`)
	// Column order and case differ from the table's; types are cast.
	m.copyTo("staging/r1/f.parquet", `SELECT day::VARCHAR AS DAY, tags, amount::DOUBLE AS amount, v, id::INTEGER AS id FROM (`+sample(0, 2)+`)`, "FORMAT parquet")
	res := m.mustApply("append", `{"table":"t","payload":{"uri":"staging/r1/f.parquet"}}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 2, Appended: true})
	// CSV fields are read as text and cast by the INSERT.
	m.put("staging/r2/f.csv", []byte("id,v,amount,tags,day\n7,\"quoted, comma\",1.5,\"[x, y]\",2024-02-29\n8,,,,\n"))
	res = m.mustApply("append", `{"table":"t","payload":{"uri":"staging/r2/f.csv"}}`)
	checkResult(t, res, Result{Tables: []string{"t"}, Rows: 2, Appended: true})
	wantRows(t, m, `SELECT id, v, amount::VARCHAR, tags::VARCHAR, day::VARCHAR FROM t ORDER BY id`,
		"0|v0|0.00|[a, b]|2024-01-01", "1|v1|1.25|[a, b]|2024-01-02",
		"7|quoted, comma|1.50|[x, y]|2024-02-29", "8|NULL|NULL|NULL|NULL")
}

func TestAppendPayloadErrors(t *testing.T) {
	m := newModel(t)
	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"},{"name":"n","type":"INTEGER"}],"primary_key":["id"]}`)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a","n":1}]}`)
	before := m.rows(`SELECT * FROM t ORDER BY id`)

	m.copyTo("staging/r/extra.parquet", `SELECT 2::BIGINT AS id, 'b' AS v, 2 AS n, 'x' AS surprise`, "FORMAT parquet")
	m.copyTo("staging/r/missing.parquet", `SELECT 2::BIGINT AS id, 'b' AS v`, "FORMAT parquet")
	m.copyTo("staging/r/types.parquet", `SELECT 2::BIGINT AS id, 'b' AS v, [1, 2] AS n`, "FORMAT parquet")
	m.copyTo("staging/r/values.parquet", `SELECT 2::BIGINT AS id, 'b' AS v, 'not a number' AS n`, "FORMAT parquet")
	m.copyTo("staging/r/dup.parquet", `SELECT 1::BIGINT AS id, 'b' AS v, 2 AS n`, "FORMAT parquet")
	m.copyTo("staging/r/good.parquet", `SELECT 5::BIGINT AS id, 'e' AS v, 5 AS n`, "FORMAT parquet")
	good, err := os.ReadFile(filepath.Join(m.store, "staging/r/good.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	m.put("staging/r/truncated.parquet", good[:len(good)/2])
	m.put("staging/r/notparquet.parquet", []byte("PAR1 this is not a parquet file, just text"))
	m.put("staging/r/empty.parquet", nil)
	m.put("staging/r/ragged.csv", []byte("id,v,n\n2,b,2\n3,c,3,extra\n4\n"))
	var late strings.Builder
	late.WriteString("id,v,n\n")
	for i := range 30000 {
		fmt.Fprintf(&late, "%d,b,2\n", 10+i)
	}
	late.WriteString("3,c\n")
	m.put("staging/r/ragged-late.csv", []byte(late.String()))
	m.put("staging/r/binary.csv", good)
	m.put("staging/r/bad.json", []byte(`{"id":2,"v":"b","n":2}`+"\n"+`{"id":3,"v":`))
	m.put("staging/r/notarrow.arrow", []byte("ARROW1 but not really an arrow file"))
	m.put("staging/r/garbage.arrows", bytes.Repeat([]byte{0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0}, 10))

	for _, tc := range []struct{ args, want string }{
		{`{"table":"t","payload":{"uri":"staging/r/extra.parquet"}}`, `does not have the columns of table t (extra "surprise"): file columns ("id" BIGINT, "v" VARCHAR, "n" INTEGER, "surprise" VARCHAR), table columns ("id" BIGINT, "v" VARCHAR, "n" INTEGER)`},
		{`{"table":"t","payload":{"uri":"staging/r/missing.parquet"}}`, `(missing "n"): file columns ("id" BIGINT, "v" VARCHAR), table columns`},
		{`{"table":"t","payload":{"uri":"staging/r/types.parquet"}}`, `INTEGER[]`},
		{`{"table":"t","payload":{"uri":"staging/r/values.parquet"}}`, "Could not convert string 'not a number' to INT32"},
		{`{"table":"t","payload":{"uri":"staging/r/dup.parquet"}}`, "Duplicate key"},
		{`{"table":"t","payload":{"uri":"staging/r/truncated.parquet"}}`, `staged file "truncated.parquet" is not a valid Parquet file (format from its extension)`},
		{`{"table":"t","payload":{"uri":"staging/r/notparquet.parquet"}}`, "No magic bytes"},
		{`{"table":"t","payload":{"uri":"staging/r/empty.parquet"}}`, `staged file "empty.parquet" is not a valid Parquet file`},
		{`{"table":"t","payload":{"uri":"staging/r/ragged.csv"}}`, `staged file "ragged.csv" is not a valid CSV file`},
		{`{"table":"t","payload":{"uri":"staging/r/ragged-late.csv"}}`, "Expected Number of Columns: 3 Found: 2"},
		{`{"table":"new","payload":{"uri":"staging/r/ragged.csv"}}`, `staged file "ragged.csv" is not a valid CSV file`},
		{`{"table":"t","payload":{"uri":"staging/r/binary.csv"}}`, `staged file "binary.csv" is not a valid CSV file`},
		{`{"table":"t","payload":{"uri":"staging/r/bad.json"}}`, "Malformed JSON"},
		{`{"table":"t","payload":{"uri":"staging/r/good.parquet","format":"json"}}`, `staged file "good.parquet" is not a valid JSON file (format given by the request)`},
		{`{"table":"t","payload":{"uri":"staging/r/notarrow.arrow"}}`, "not a valid Arrow IPC file or stream"},
		{`{"table":"t","payload":{"uri":"staging/r/garbage.arrows"}}`, "not a valid Arrow IPC file or stream"},
		{`{"table":"t","payload":{"uri":"staging/r/good.parquet","format":"arrow"}}`, "not a valid Arrow IPC file or stream"},
		{`{"table":"nope","payload":{"uri":"staging/r/good.parquet"},"create":false}`, `table "nope" does not exist and create is false`},
	} {
		m.applyErr("append", tc.args, tc.want)
		if after := m.rows(`SELECT * FROM t ORDER BY id`); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("%s changed t: %v", tc.args, after)
		}
	}
	wantRows(t, m, `SELECT count(*) FROM duckdb_tables() WHERE table_name = 'new' OR table_name = 'nope'`, "0")

	// Errors from Payload come back as they are.
	_, err = m.apply("append", `{"table":"t","payload":{"uri":"staging/r/absent.parquet"}}`)
	if !errors.Is(err, model.ErrNotFound) || errors.Is(err, model.ErrInvalid) {
		t.Errorf("absent payload: %v, want the Payload error", err)
	}
	// The converted Arrow files are gone; only fetched payloads remain.
	filepath.WalkDir(m.staging, func(p string, d os.DirEntry, err error) error {
		if strings.Contains(filepath.Base(p), ".arrow-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	// A good file works after all that.
	m.mustApply("append", `{"table":"t","payload":{"uri":"staging/r/good.parquet"}}`)
	wantRows(t, m, `SELECT id FROM t ORDER BY id`, "1", "5")
}

// arrowRecord builds a record with the columns of arrowSchema.
var arrowSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
	{Name: "d", Type: &arrow.Decimal128Type{Precision: 20, Scale: 2}, Nullable: true},
	{Name: "cat", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, Nullable: true},
	{Name: "s", Type: arrow.StructOf(arrow.Field{Name: "a", Type: arrow.PrimitiveTypes.Int32, Nullable: true}), Nullable: true},
}, nil)

func arrowRecord(t testing.TB, ids ...int64) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(memory.NewGoAllocator(), arrowSchema)
	defer b.Release()
	for _, id := range ids {
		b.Field(0).(*array.Int64Builder).Append(id)
		b.Field(1).(*array.StringBuilder).Append("v" + strconv.FormatInt(id, 10))
		b.Field(2).(*array.TimestampBuilder).Append(arrow.Timestamp(id * 1_000_000))
		lb := b.Field(3).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Int32Builder).AppendValues([]int32{int32(id), int32(id) + 1}, nil)
		b.Field(4).(*array.Decimal128Builder).AppendNull()
		b.Field(5).(*array.BinaryDictionaryBuilder).AppendString("cat" + strconv.FormatInt(id%2, 10))
		sb := b.Field(6).(*array.StructBuilder)
		sb.Append(true)
		sb.FieldBuilder(0).(*array.Int32Builder).Append(int32(id))
	}
	return b.NewRecordBatch()
}

// arrowBytes writes records as an Arrow IPC file (file true) or stream.
func arrowBytes(t testing.TB, file bool, recs ...arrow.RecordBatch) []byte {
	t.Helper()
	var buf bytes.Buffer
	if file {
		w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(arrowSchema))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	w := ipc.NewWriter(&buf, ipc.WithSchema(arrowSchema))
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAppendArrow(t *testing.T) {
	m := newModel(t)
	m.put("staging/r1/f.arrow", arrowBytes(t, true, arrowRecord(t, 1, 2, 3)))
	m.put("staging/r2/f.arrows", arrowBytes(t, false, arrowRecord(t, 4), arrowRecord(t, 5, 6)))
	m.put("staging/r3/empty.bin", arrowBytes(t, false))

	res := m.mustApply("append", `{"table":"a","payload":{"uri":"staging/r1/f.arrow"}}`)
	checkResult(t, res, Result{Tables: []string{"a"}, Rows: 3, Appended: true})
	wantRows(t, m, `SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'a' ORDER BY column_index`,
		"id|BIGINT", "v|VARCHAR", "ts|TIMESTAMP WITH TIME ZONE", "l|INTEGER[]", "d|DECIMAL(20,2)", "cat|VARCHAR", "s|STRUCT(a INTEGER)")
	res = m.mustApply("append", `{"table":"a","payload":{"uri":"staging/r2/f.arrows","format":"arrow"}}`)
	checkResult(t, res, Result{Tables: []string{"a"}, Rows: 3, Appended: true})
	res = m.mustApply("append", `{"table":"a","payload":{"uri":"staging/r3/empty.bin","format":"arrow"}}`)
	checkResult(t, res, Result{Tables: []string{"a"}, Rows: 0, Appended: true})
	wantRows(t, m, `SELECT id, v, epoch(ts)::BIGINT, l::VARCHAR, d, cat, s.a FROM a ORDER BY id`,
		"1|v1|1|[1, 2]|NULL|cat1|1", "2|v2|2|[2, 3]|NULL|cat0|2", "3|v3|3|[3, 4]|NULL|cat1|3",
		"4|v4|4|[4, 5]|NULL|cat0|4", "5|v5|5|[5, 6]|NULL|cat1|5", "6|v6|6|[6, 7]|NULL|cat0|6")
	// An empty stream creates a table with the schema and no rows.
	res = m.mustApply("append", `{"table":"b","payload":{"uri":"staging/r3/empty.bin","format":"arrow"}}`)
	checkResult(t, res, Result{Tables: []string{"b"}, Rows: 0, Appended: true})
	wantRows(t, m, `SELECT count(*) FROM duckdb_columns() WHERE table_name = 'b'`, "7")
	// Truncated Arrow: a clear error, nothing written.
	full := arrowBytes(t, false, arrowRecord(t, 7, 8))
	m.put("staging/r4/cut.arrows", full[:len(full)-40])
	m.applyErr("append", `{"table":"a","payload":{"uri":"staging/r4/cut.arrows"}}`, "not a valid Arrow IPC file or stream")
	fileBytes := arrowBytes(t, true, arrowRecord(t, 7, 8))
	m.put("staging/r4/cut.arrow", fileBytes[:len(fileBytes)-20])
	m.applyErr("append", `{"table":"a","payload":{"uri":"staging/r4/cut.arrow"}}`, "not a valid Arrow IPC file or stream")
	wantRows(t, m, `SELECT count(*) FROM a`, "6")
}
