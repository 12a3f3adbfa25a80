package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/teatree/teatree/model"
)

// TestRequestParsedOnce: a request the db-manager prepares (Prepare) and
// applies runs its SQL through the private parser once, not again in
// Apply (which only runs the statement on the model).
func TestRequestParsedOnce(t *testing.T) {
	m := newModel(t)
	createT(m)
	m.allowSQL = true
	for _, tc := range []struct{ fn, args string }{
		{"refresh", `{"table":"d","query":"SELECT v, count(*) AS n FROM t GROUP BY v"}`},
		{"sql", `{"sql":"UPDATE t SET v = upper(v)"}`},
		{"create_table", `{"table":"u","columns":[{"name":"id","type":"BIGINT"}]}`},
	} {
		r := model.Request{ID: "r1", Model: "m", Function: tc.fn, Args: json.RawMessage(tc.args)}
		parserDB()
		before := parserRuns.Load()
		c, err := Prepare(r, true)
		if err != nil {
			t.Fatal(err)
		}
		m.exec("BEGIN TRANSACTION")
		if _, err := c.Apply(context.Background(), m.env()); err != nil {
			t.Fatal(err)
		}
		m.exec("COMMIT")
		if n := parserRuns.Load() - before; n != 1 {
			t.Errorf("%s: %d runs of the private parser, want 1", tc.fn, n)
		}
	}
}

// TestSchemaEnforced: what a spec's schema refuses, Decode refuses, with
// one line naming the function and the place in the args, even when no
// Check states the rule: here drop_table's spec with a stricter schema.
func TestSchemaEnforced(t *testing.T) {
	s := dropTableSpec
	s.Name = "drop_table_strict"
	s.Schema = `"required": ["table"], "properties": {"table": {"$ref": "#/$defs/table", "maxLength": 3}, "if_exists": {"type": "boolean"}}`
	f := newFunction(s)
	if _, err := f.Decode(json.RawMessage(`{"table":"abc"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := f.Decode(json.RawMessage(`{"table":"abcd"}`))
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("Decode = %v, want ErrInvalid", err)
	}
	want := "drop_table_strict: invalid: args.table: "
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q: want one line starting with %q", err, want)
	}
}

// TestSchemaErrorPath: the schema's error names the most specific place.
func TestSchemaErrorPath(t *testing.T) {
	f := registry["append"].(*function[appendArgs])
	err := f.validate(json.RawMessage(`{"table":"t","rows":[{"a":1},{"a":2},{"a":3},"x"]}`))
	if err == nil || !strings.Contains(err.Error(), "args.rows[3]: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("validate = %v, want one line about args.rows[3]", err)
	}
	err = f.validate(json.RawMessage(`{"table":"t","rows":[{"a b":1}],"payload":{"uri":"staging/m/r/f.csv"}}`))
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("validate = %v, want one line", err)
	}
}

// appendRowsArgs is a typical append: 100 rows of 5 columns.
func appendRowsArgs() json.RawMessage {
	var rows []string
	for i := range 100 {
		rows = append(rows, fmt.Sprintf(`{"id":%d,"v":"value %d","n":%d.5,"ok":true,"day":"2026-01-%02d"}`, i, i, i, i%28+1))
	}
	return json.RawMessage(`{"table":"t","rows":[` + strings.Join(rows, ",") + `]}`)
}

// BenchmarkValidateAppendRows is the dispatcher's check of a typical
// append (ValidateRequest).
func BenchmarkValidateAppendRows(b *testing.B) {
	args := appendRowsArgs()
	r := model.Request{ID: "r1", Model: "m", Function: "append", Args: args}
	b.SetBytes(int64(len(args)))
	for b.Loop() {
		if err := ValidateRequest(r, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareOneRow is the db-manager's decoding and check of one
// request of scenario 1a (a one-row append), per request.
func BenchmarkPrepareOneRow(b *testing.B) {
	r := model.Request{ID: "s1-12345", Model: "small-1", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"id":12345,"v":"teabench row"}]}`)}
	for b.Loop() {
		if _, err := Prepare(r, false); err != nil {
			b.Fatal(err)
		}
	}
}
