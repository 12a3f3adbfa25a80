// Package functions is the closed, typed set of functions a request can
// call on a model. Each Function names itself, documents its args as a JSON
// Schema (draft 2020-12, with examples; `teactl functions NAME` prints it),
// decodes and checks args once without a model (Decode, used by the
// dispatcher and the db-manager alike through Prepare and ValidateRequest)
// into a Call, and the Call applies the decoded args on the model's DuckDB
// connection inside the db-manager's open transaction (Call.Apply), never
// committing or rolling back itself.
//
// # Adding a function
//
// A function is one declaration, a spec[A] over its args struct A (in the
// spirit of River's Worker[T JobArgs]), registered in init:
//
//	type renameArgs struct {
//		Table string `json:"table"`
//		To    string `json:"to"`
//	}
//
//	var renameSpec = spec[renameArgs]{
//		Name:        "rename_table",
//		Summary:     "rename a table of schema main",
//		Description: "Renames main.<table> to main.<to>.",
//		Schema: `"required": ["table", "to"],
//		  "properties": {"table": {"$ref": "#/$defs/table"}, "to": {"$ref": "#/$defs/table"}}`,
//		Examples: []string{`{"table":"t","to":"u"}`},
//		Check: func(a *renameArgs) error {
//			if err := checkTable(a.Table); err != nil {
//				return err
//			}
//			return checkTable(a.To)
//		},
//		Apply: func(ctx context.Context, env Env, a *renameArgs) (Result, error) {
//			env.Tables.Forget()
//			if _, err := env.Conn.ExecContext(ctx, "ALTER TABLE "+qualified(a.Table)+" RENAME TO "+duck.Ident(a.To)); err != nil {
//				return Result{}, dbError("rename table "+a.Table, err)
//			}
//			return Result{Tables: []string{a.Table, a.To}, Replaced: true}, nil
//		},
//	}
//
//	func init() { register(renameSpec) } // or add it to the list in functions.go
//
// Decode then does the rest, the same for every function: a strict
// decoding of the args into a new A, Check, and validation against the
// schema built from Description, Schema and Examples (the one `teactl
// functions` shows, compiled once with santhosh-tekuri/jsonschema/v6 and
// enforced; its error is one line such as `append: invalid: args.rows[3]:
// got string, want object`). Check and Apply return errors without the
// function's name (invalid, dbError): the adapter adds it, once. Apply gets
// the args Check saw (and normalised), never the JSON again, and must not
// change them: the db-manager may apply a call twice. A test applies every
// schema example and fuzzes Decode against the schema (FuzzValidate).
//
// The functions, with one example of args each:
//
//	create_table  {"table":"t","columns":[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}],"primary_key":["id"]}
//	append        {"table":"t","rows":[{"id":1,"v":"a"}]}
//	              {"table":"t","payload":{"uri":"staging/<model>/<request_id>/f.parquet","format":"parquet"}}
//	              {"table":"t","source":{"name":"crm","query":"SELECT id, name FROM customers"}}
//	upsert        {"table":"t","rows":[{"id":1,"v":"b"}]}
//	update        {"table":"t","set":{"v":"b"},"where":[{"column":"id","op":"=","value":1}]}
//	delete        {"table":"t","where":[{"column":"id","op":"in","value":[1,2]}]}
//	refresh       {"table":"derived","query":"SELECT v, count(*) AS n FROM t GROUP BY v"}
//	drop_table    {"table":"t"}
//	sql           {"sql":"ALTER TABLE t ADD COLUMN note VARCHAR"}
//
// Rules every function keeps:
//
//   - Args are strict JSON: unknown fields, keys in another case, duplicate
//     keys and null for a typed field are errors. Every Decode error
//     wraps model.ErrInvalid and says what to do.
//   - Functions touch only tables of schema main. Table names match
//     `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and may not start with _teatree (the
//     db-manager's own schema) in any case. Column names are 1 to 255 bytes
//     without NUL and are always quoted (duck.Ident). DuckDB matches both
//     case-insensitively, and so do the functions; Result.Tables spells a
//     table as the catalog does.
//   - Values are bound as parameters, never pasted into SQL. JSON numbers
//     keep their precision: integers that fit int64 bind as BIGINT, others
//     as their decimal text, which DuckDB casts exactly to the column type.
//     JSON objects and arrays bind as JSON text.
//   - What must be pasted is checked by DuckDB's own parser on a private
//     in-memory DuckDB (external access off): column types of create_table
//     (plus an allow-list of characters and balanced brackets), the SELECT
//     of refresh (json_serialize_sql; its AST is walked to refuse table
//     functions, file reads, other schemas and _teatree), the statement of
//     sql (prepared, never executed, to learn its type).
//   - update and delete need a non-empty where, or an explicit "all": true.
//   - sql is privileged (spec.Privileged): Prepare refuses it unless the
//     model allows it, and Call.Apply refuses it unless Env.AllowSQL.
//
// # Payloads
//
// append with a payload calls Env.Payload to fetch the staged object to a
// local file in a directory the model's DuckDB may read
// (allowed_directories), then reads it with DuckDB's own readers:
// read_parquet, read_csv (header row, strict mode: a ragged row is an
// error), read_json. An Arrow IPC file or stream is first converted to a
// Parquet file next to it with arrow-go (DuckDB 1.4 has no Arrow IPC
// reader here, and duckdb-go's Arrow API needs the duckdb_arrow build
// tag); the temporary file is removed before Call.Apply returns. A missing table
// is created from the file's schema (CREATE TABLE AS), unless "create":
// false; into an existing table the file's columns must be exactly the
// table's (by name, in any order) and the rows are inserted BY NAME, with
// DuckDB casting each value to the column's type.
//
// A CSV or JSON payload may be gzip- or zstd-compressed, told by a last
// .gz or .zst extension (PayloadKind); .ndjson and .jsonl files are read as
// newline-delimited JSON.
//
// # Postgres sources
//
// append with a source reads the rows of a query or table from a Postgres
// source named in Env.Sources (configured on the db-manager; an unknown
// name fails the request): in a read-only transaction, with binary COPY,
// decoded into Arrow record batches on a goroutine of its own and inserted
// through DuckDB's Arrow scan inside the caller's transaction, in bounded
// memory (a few batches). mapType documents the type map.
//
// # Errors from Call.Apply
//
// Errors that are the request's fault wrap model.ErrInvalid: bad args, a
// missing table, unknown columns, a file that does not fit, a constraint
// violation, a value DuckDB cannot cast. DuckDB errors keep their
// *duckdb.Error in the chain, so a caller can tell fatal and internal
// errors (restart) and I/O errors; errors from Env.Payload and from ctx are
// returned as they are, with context only. After any error the caller
// must roll back: a failed statement aborts the DuckDB transaction.
package functions
