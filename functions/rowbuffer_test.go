package functions

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The appends of a batch share a RowBuffer: their rows reach the tables
// only at Flush, each table's in request order, with DEFAULT for the
// columns a row leaves out; a request's own binding errors stay its own,
// and a constraint broken by one of them fails the flush.
func TestRowBufferDefersAppends(t *testing.T) {
	m := newModel(t)
	m.exec(`CREATE TABLE a (n BIGINT PRIMARY KEY, v VARCHAR DEFAULT 'd'); CREATE TABLE b (n BIGINT)`)
	ctx := context.Background()
	call := func(args string) Call {
		f, err := Lookup("append")
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.Decode(json.RawMessage(args))
		if err != nil {
			t.Fatal(err)
		}
		if !DefersRows(c) {
			t.Fatalf("append %s does not defer its rows", args)
		}
		return c
	}
	env := m.env()
	env.Tables, env.Rows = NewTableCache(), &RowBuffer{}
	for _, args := range []string{
		`{"table":"a","rows":[{"n":1,"v":"x"}]}`,
		`{"table":"b","rows":[{"n":10},{"n":11}]}`,
		`{"table":"a","rows":[{"n":2}]}`,
		`{"table":"b","rows":[{"n":12}]}`,
	} {
		res, err := call(args).Apply(ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(strings.Count(args, `"n"`)); res.Rows != want || !res.Appended {
			t.Errorf("%s: result %+v, want %d rows appended", args, res, want)
		}
	}
	if _, err := call(`{"table":"a","rows":[{"n":"three"}]}`).Apply(ctx, env); err == nil || !strings.Contains(err.Error(), `row 0: column "n"`) {
		t.Errorf("a bad value: %v, want the request's own error", err)
	}
	wantRows(t, m, `SELECT count(*) FROM a`, "0") // nothing inserted before Flush
	if err := env.Rows.Flush(ctx, m.conn); err != nil {
		t.Fatal(err)
	}
	wantRows(t, m, `SELECT n, v FROM a ORDER BY rowid`, "1|x", "2|d")
	wantRows(t, m, `SELECT n FROM b ORDER BY rowid`, "10", "11", "12")
	if _, err := call(`{"table":"a","rows":[{"n":1}]}`).Apply(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := env.Rows.Flush(ctx, m.conn); err == nil || !strings.Contains(err.Error(), "append: ") {
		t.Errorf("a duplicate key at flush: %v, want an append error", err)
	}
	for _, args := range []string{`{"table":"a","payload":{"uri":"staging/m/r/f.parquet"}}`} {
		f, _ := Lookup("append")
		if c, err := f.Decode(json.RawMessage(args)); err == nil && DefersRows(c) {
			t.Errorf("%s defers: only inline rows do", args)
		}
	}
}
