package functions

import (
	"testing"
)

// TestAppendEmptyFileNeedsATable: CSV and JSON files carry no types, so a
// file without rows cannot say what table to create (DuckDB would make a
// junk column0 VARCHAR or json JSON table). Such a file is refused for a
// missing table, with nothing created, and appends nothing to an existing
// one. Parquet and Arrow files carry their schema and create the table
// even without rows.
func TestAppendEmptyFileNeedsATable(t *testing.T) {
	m := newModel(t)
	files := map[string]string{
		"empty.csv":       "",
		"blank.csv":       "\n\n",
		"header.csv":      "id,v\n",
		"empty.json":      "",
		"array.json":      "[]",
		"blank.ndjson":    "\n \n",
		"emptyarray.json": " [ ] \n",
	}
	for name, content := range files {
		m.put("staging/r/"+name, []byte(content))
		m.applyErr("append", `{"table":"t","payload":{"uri":"staging/r/`+name+`"}}`, "has no rows, so the column types of table t cannot be known: create the table first (create_table)")
	}
	wantRows(t, m, `SELECT count(*) FROM duckdb_tables()`, "0")

	m.mustApply("create_table", `{"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}]}`)
	m.mustApply("append", `{"table":"t","rows":[{"id":1,"v":"a"}]}`)
	for name := range files {
		res := m.mustApply("append", `{"table":"t","payload":{"uri":"staging/r/`+name+`"}}`)
		checkResult(t, res, Result{Tables: []string{"t"}, Rows: 0, Appended: true})
	}
	// A header names columns, and they must be the table's.
	m.put("staging/r/other.csv", []byte("id,w\n"))
	m.applyErr("append", `{"table":"t","payload":{"uri":"staging/r/other.csv"}}`, `does not have the columns of table t (missing "v"; extra "w")`)
	wantRows(t, m, `SELECT id, v FROM t`, "1|a")

	// A Parquet file without rows has a schema: it creates the table.
	m.copyTo("staging/r/none.parquet", `SELECT 1::BIGINT AS id, 'x' AS v WHERE false`, "FORMAT parquet")
	res := m.mustApply("append", `{"table":"p","payload":{"uri":"staging/r/none.parquet"}}`)
	checkResult(t, res, Result{Tables: []string{"p"}, Rows: 0, Appended: true})
	wantRows(t, m, `SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'p' ORDER BY column_index`, "id|BIGINT", "v|VARCHAR")
}
