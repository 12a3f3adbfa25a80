package reader

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// FuzzDecodeRequest: a query request from the network decodes or is
// refused with model.ErrInvalid, never a panic.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"sql":"SELECT 1"}`))
	f.Add([]byte(`{"sql":"SELECT * FROM t","version":3,"max_rows":10,"max_bytes":100,"timeout_ms":5,"render":"csv"}`))
	f.Add([]byte(`{"sql":"DELETE FROM t"}`))
	f.Add([]byte(`{"sql":"SELECT 1","extra":1}`))
	f.Add([]byte(`{"sql":"SELECT 1"} {}`))
	f.Add([]byte(`{"version":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if r.Version < 0 || r.MaxRows < 0 || r.MaxBytes < 0 || r.TimeoutMS < 0 {
			t.Fatalf("accepted negative numbers: %+v", r)
		}
	})
}

// FuzzFanOutPlan: a fan-out query (user SQL, parsed by DuckDB and
// rewritten) is planned or refused with one line; a planned query's
// partial is one SELECT again, and its merge and final query bind over
// partials of the planned width.
func FuzzFanOutPlan(f *testing.F) {
	for _, q := range []string{
		"SELECT origin, count(*), avg(delay), count(DISTINCT dest) FROM flights GROUP BY origin ORDER BY 2 DESC LIMIT 3",
		"SELECT count(*) FILTER (WHERE delay > 1) FROM flights WHERE dest <> 'x'",
		"SELECT a, b FROM t ORDER BY a",
		"SELECT DISTINCT a FROM t",
		"SELECT median(x) FROM t",
		"SELECT sum(x) / count(*) FROM t GROUP BY ALL",
		"SELECT lower(o) AS l, min(x) FROM t GROUP BY o ORDER BY l",
	} {
		f.Add(q)
	}
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{Threads: 1, MemoryLimit: "128MB"})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	f.Fuzz(func(t *testing.T, q string) {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		p, err := plan(ctx, conn, q)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of %d lines: %q", strings.Count(err.Error(), "\n")+1, err)
			}
			return
		}
		if err := functions.ValidateSelect(p.partial); err != nil {
			t.Fatalf("partial %q of %q: %v", p.partial, q, err)
		}
		if p.width < len(p.items) {
			t.Fatalf("partial of %d columns for %d select items", p.width, len(p.items))
		}
	})
}
