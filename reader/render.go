package reader

import "github.com/teatree/teatree/duck"

// RenderSQL wraps the SELECT q so that DuckDB renders its result as teactl
// query prints it: for table and csv every column cast to VARCHAR (NULL
// stays NULL), for json one VARCHAR column, DuckDB's to_json of each row
// (keys in column order). q runs through DuckDB's query() table function:
// no SQL text is pasted around it. teactl's local path and the reader
// both use it, so a remote result prints exactly as a local one.
func RenderSQL(q, format string) string {
	src := "query(" + duck.Literal(q) + ")"
	if format == "json" {
		return "SELECT to_json(" + RowAlias + ")::VARCHAR FROM " + src + " AS " + RowAlias
	}
	return "SELECT COLUMNS(*)::VARCHAR FROM " + src
}

// RowAlias names the query's result in the json form of RenderSQL; a
// column of that name would shadow it.
const RowAlias = "__teactl_row"
