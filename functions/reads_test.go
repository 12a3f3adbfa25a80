package functions

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// otherModel writes a DuckDB file with main.flights into dir (a directory
// DuckDB may read) and returns its path.
func otherModel(t *testing.T, dir, name string, rows string) string {
	t.Helper()
	path := filepath.Join(dir, name+".duckdb")
	db, err := duck.Open(context.Background(), path, duck.Options{Threads: 1, MemoryLimit: "128MB"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE flights AS SELECT * FROM (VALUES " + rows + ") v(carrier, delay)"); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRefreshReadsOtherModel: a refresh reads alias.flights of an
// attached version READ_ONLY, in a transaction with other requests; the
// alias is detached after (a second request may attach another file
// under the same alias); the result is DuckDB's over the same rows.
func TestRefreshReadsOtherModel(t *testing.T) {
	m := newModel(t)
	v1 := otherModel(t, m.staging, "v1", "('AA', 10), ('AA', 20), ('UA', 5)")
	v2 := otherModel(t, m.staging, "v2", "('DL', 7)")
	m.reads = map[string]string{"fl": v1}
	m.mustApply("refresh", `{"table":"by_carrier","query":"SELECT carrier, sum(delay) AS delay FROM fl.flights GROUP BY ALL ORDER BY carrier","reads":{"fl":{"model":"flights","version":1}}}`)
	if got, want := m.rows("SELECT * FROM by_carrier ORDER BY carrier"), []string{"AA|30", "UA|5"}; !slices.Equal(got, want) {
		t.Errorf("by_carrier = %v, want %v", got, want)
	}
	if got := m.rows("SELECT database_name FROM duckdb_databases() WHERE database_name = 'fl'"); len(got) != 0 {
		t.Errorf("fl still attached after the refresh: %v", got)
	}
	// Two requests in one transaction, the same alias on two files, the
	// second spelling alias.main.t.
	env1 := `{"table":"a","query":"SELECT count(*) AS n FROM fl.flights","reads":{"fl":{"model":"flights"}}}`
	env2 := `{"table":"b","query":"SELECT count(*) AS n FROM fl.main.flights","reads":{"fl":{"model":"flights"}}}`
	if _, err := m.applyBatch(request{"refresh", env1}); err != nil {
		t.Fatal(err)
	}
	m.reads["fl"] = v2
	if _, err := m.applyBatch(request{"refresh", env2}); err != nil {
		t.Fatal(err)
	}
	if got, want := m.rows("SELECT (SELECT n FROM a), (SELECT n FROM b)"), []string{"3|1"}; !slices.Equal(got, want) {
		t.Errorf("counts = %v, want %v", got, want)
	}
}

// TestRefreshReadsRefused: what a read may not do.
func TestRefreshReadsRefused(t *testing.T) {
	m := newModel(t)
	m.reads = map[string]string{"fl": otherModel(t, m.staging, "v1", "('AA', 1)")}
	m.mustApply("create_table", `{"table":"fl","columns":[{"name":"x","type":"INTEGER"}]}`)
	for _, c := range []struct{ fn, args, want string }{
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights"}`, `query reads "fl.flights": a refresh may read only tables of schema main`},
		{"refresh", `{"table":"t","query":"SELECT * FROM other.flights","reads":{"fl":{"model":"flights"}}}`, `query reads "other.flights"`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl._teatree.applied","reads":{"fl":{"model":"flights"}}}`, `query reads "fl._teatree.applied"`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"main":{"model":"flights"}}}`, `reads alias "main" is reserved`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"Fl":{"model":"flights"}}}`, `reads alias "Fl" is not valid`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"Flights!"}}}`, `reads.fl.model`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"flights","version":0}}}`, `args.reads.fl.version`},
		{"refresh", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"flights"}}}`, `reads alias "fl" is also the name of a schema, table or database of this model`},
		{"derive", `{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"flights"}}}`, `a derived table cannot read other models`},
	} {
		m.applyErr(c.fn, c.args, c.want)
	}
	// The model itself: refused by Prepare, which knows the model.
	_, err := Prepare(model.Request{ID: "r1", Model: "flights", Function: "refresh",
		Args: json.RawMessage(`{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"flights"}}}`)}, false)
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "names model flights itself") {
		t.Fatalf("reading the model itself: %v, want an invalid request", err)
	}
}

// FuzzReadsOf: ReadsOf never panics, and what it returns from args a
// refresh accepts is what the refresh decoded.
func FuzzReadsOf(f *testing.F) {
	f.Add(`{"table":"t","query":"SELECT * FROM fl.flights","reads":{"fl":{"model":"flights","version":3}}}`)
	f.Add(`{"table":"t","query":"SELECT 1","reads":{"a":{"model":"m"},"b":{"model":"n","version":1}}}`)
	f.Add(`{"reads":null}`)
	f.Fuzz(func(t *testing.T, args string) {
		reads := ReadsOf(json.RawMessage(args))
		call, err := newFunction(refreshSpec).Decode(json.RawMessage(args))
		if err != nil {
			return
		}
		c := call.(interface{ decoded() any }).decoded().(*refreshArgs)
		if len(reads) != len(c.Reads) {
			t.Fatalf("ReadsOf %v, refresh decoded %v", reads, c.Reads)
		}
		for k, v := range c.Reads {
			if reads[k] != v {
				t.Fatalf("ReadsOf %v, refresh decoded %v", reads, c.Reads)
			}
		}
	})
}
