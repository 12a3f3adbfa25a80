//go:build duckdb_arrow

package cli

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/google/go-cmp/cmp"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// readBack is a result file (or an Arrow IPC stream) read back with
// DuckDB: its column types and its rows, each column cast to VARCHAR, in
// order.
type readBack struct {
	Types []string
	Rows  [][]sql.NullString
}

// readResult reads the result in data (kind "stream": an Arrow IPC
// stream) or at path (kind parquet, arrow, csv) back with DuckDB.
func readResult(t *testing.T, kind, path string, data []byte) readBack {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var from string
	switch kind {
	case "parquet":
		from = "read_parquet(" + duck.Literal(path) + ")"
	case "csv":
		from = "read_csv(" + duck.Literal(path) + ")"
	case "stream", "arrow":
		var rr array.RecordReader
		if kind == "stream" {
			rd, err := ipc.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("not an Arrow IPC stream: %v", err)
			}
			rr = rd
		} else {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fr, err := ipc.NewFileReader(f)
			if err != nil {
				t.Fatalf("%s: not an Arrow IPC file: %v", path, err)
			}
			var recs []arrow.RecordBatch
			for i := range fr.NumRecords() {
				rec, err := fr.RecordBatch(i)
				if err != nil {
					t.Fatal(err)
				}
				rec.Retain()
				recs = append(recs, rec)
			}
			if rr, err = array.NewRecordReader(fr.Schema(), recs); err != nil {
				t.Fatal(err)
			}
		}
		release, err := duck.RegisterArrow(conn, rr, "result")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		from = "result"
	}
	// An Arrow stream is read once: into a table. (A file is a view: a
	// table cannot hold the unnamed struct a UNION is in Parquet.)
	create := "CREATE VIEW back AS SELECT * FROM "
	if from == "result" {
		create = "CREATE TABLE back AS SELECT * FROM "
	}
	if _, err := conn.ExecContext(ctx, create+from); err != nil {
		t.Fatalf("read %s back: %v", kind, err)
	}
	var rb readBack
	rows, err := conn.QueryContext(ctx, "SELECT column_type FROM (DESCRIBE back)")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ string
		rows.Scan(&typ)
		rb.Types = append(rb.Types, typ)
	}
	rows.Close()
	rows, err = conn.QueryContext(ctx, "SELECT COLUMNS(*)::VARCHAR FROM back")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		row := make([]sql.NullString, len(rb.Types))
		ptrs := make([]any, len(row))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		rb.Rows = append(rb.Rows, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return rb
}

// TestQueryOutputRemoteSameAsLocal: --format arrow and -o FILE.parquet,
// .arrow and .csv through a reader give the same data as --local (read
// back with DuckDB: same column types, same rows in order), for every
// type and a result of many pages; a bad extension and a clash of MODEL@N
// with --version are one-line errors.
func TestQueryOutputRemoteSameAsLocal(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	s.CreateModel(t, controldb.Model{ID: "types", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "types", 10)
	var vals, nulls []string
	for i, tc := range outputTypeCases() {
		vals = append(vals, fmt.Sprintf("CAST(%s AS %s) AS c%d", tc.lit, tc.typ, i))
		nulls = append(nulls, fmt.Sprintf("CAST(NULL AS %s)", tc.typ))
	}
	b.exec("CREATE TYPE mood AS ENUM ('sad', 'happy'); DROP TABLE t; CREATE TABLE t AS SELECT " + strings.Join(vals, ", ") + " UNION ALL SELECT " + strings.Join(nulls, ", "))
	b.publish("")
	env := stackEnv(t, s)
	startReader(t, s, 4<<10)
	dir := t.TempDir()

	queries := []struct {
		sql  string
		rows int
	}{
		{"SELECT * FROM t", 2},
		{"SELECT range AS id, 'row ' || range AS v, range / 7 AS d, (CASE WHEN range % 3 = 0 THEN 'sad' ELSE 'happy' END)::mood AS m FROM range(20000) ORDER BY id DESC", 20000},
	}
	for qi, q := range queries {
		for _, kind := range []string{"stream", "arrow", "parquet", "csv"} {
			var got [2]readBack
			for i, mode := range []string{"remote", "local"} {
				before := readerRequests(t, s, "query")
				args := []string{"query", "types", q.sql}
				path := ""
				if kind == "stream" {
					args = append(args, "--format", "arrow")
				} else {
					path = filepath.Join(dir, fmt.Sprintf("q%d-%s.%s", qi, mode, kind))
					args = append(args, "-o", path)
				}
				if mode == "local" {
					args = append(args, "--local")
				}
				out, errOut, code := teactl(t, ctx, env, args...)
				if code != 0 {
					t.Fatalf("%s %s %.40s: exit %d: %s", mode, kind, q.sql, code, errOut)
				}
				if kind != "stream" && out != "" {
					t.Errorf("%s %s: -o printed %q", mode, kind, out)
				}
				if n := readerRequests(t, s, "query") - before; (mode == "remote") != (n == 1) {
					t.Fatalf("%s %s: the reader answered %d queries", mode, kind, n)
				}
				got[i] = readResult(t, kind, path, []byte(out))
			}
			if len(got[0].Rows) != q.rows {
				t.Errorf("%s %.40s: %d rows read back, want %d", kind, q.sql, len(got[0].Rows), q.rows)
			}
			if diff := cmp.Diff(got[1], got[0]); diff != "" {
				t.Errorf("%s %.40s: through the reader (+) vs --local (-):\n%.3000s", kind, q.sql, diff)
			}
		}
	}
	// The Arrow formats keep the types: the range query's id is a BIGINT.
	path := filepath.Join(dir, "q1-remote.parquet")
	if rb := readResult(t, "parquet", path, nil); rb.Types[0] != "BIGINT" || rb.Rows[0][0].String != "19999" {
		t.Errorf("%s: types %v, first row %v: want BIGINT id, 19999 first", path, rb.Types, rb.Rows[0])
	}

	// A bad extension: one line, nothing written.
	bad := filepath.Join(dir, "out.txt")
	if _, errOut, code := teactl(t, ctx, env, "query", "types", "SELECT 1", "-o", bad); code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, `unknown extension ".txt"`) {
		t.Errorf("-o out.txt: exit %d: %q", code, errOut)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Errorf("-o out.txt wrote %s", bad)
	}
	// --format must agree with the extension; .json is --format json.
	if _, errOut, code := teactl(t, ctx, env, "query", "types", "SELECT 1", "--format", "csv", "-o", filepath.Join(dir, "x.parquet")); code == 0 || !strings.Contains(errOut, "disagree") {
		t.Errorf("--format csv -o x.parquet: exit %d: %q", code, errOut)
	}
	js := filepath.Join(dir, "out.json")
	want, _, _ := teactl(t, ctx, env, "query", "types", queries[0].sql, "--format", "json")
	if _, errOut, code := teactl(t, ctx, env, "query", "types", queries[0].sql, "-o", js); code != 0 {
		t.Errorf("-o out.json: exit %d: %s", code, errOut)
	} else if got, _ := os.ReadFile(js); string(got) != want {
		t.Errorf("-o out.json differs from --format json:\n%.500s\n%.500s", got, want)
	}
	// A failed query leaves the output file as it was.
	keep := filepath.Join(dir, "q0-remote.parquet")
	before, _ := os.ReadFile(keep)
	if _, _, code := teactl(t, ctx, env, "query", "types", "SELECT nope FROM t", "-o", keep); code == 0 {
		t.Error("a bad query exited 0")
	}
	if after, _ := os.ReadFile(keep); !bytes.Equal(before, after) {
		t.Error("a failed query changed the -o file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// outputTypeCases are typeCases with HUGEINT and UHUGEINT values that fit
// the decimal(38,0) DuckDB exports them as in Arrow (their extremes do
// not: see docs/decisions.md).
func outputTypeCases() []struct{ typ, lit, table, csv, json string } {
	cases := slices.Clone(typeCases)
	for i, tc := range cases {
		switch tc.typ {
		case "HUGEINT":
			cases[i].lit = "-12345678901234567890123456789012345678"
		case "UHUGEINT":
			cases[i].lit = "12345678901234567890123456789012345678"
		}
	}
	return cases
}

// TestQueryModelAtVersion: MODEL@N queries version N, through a reader
// and locally, as --version N does; with a different --version it is an
// error.
func TestQueryModelAtVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	s.CreateModel(t, controldb.Model{ID: "m", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "m", 10)
	b.publish("")
	b.exec("INSERT INTO t SELECT range + 10, 'more', 0 FROM range(5)")
	b.publish("")
	env := stackEnv(t, s)
	count := func(args ...string) string {
		t.Helper()
		out, errOut, code := teactl(t, ctx, env, append([]string{"query"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	q := "SELECT count(*) AS n FROM t"
	for _, mode := range []string{"local", "remote"} {
		if mode == "remote" {
			startReader(t, s, 4<<10)
		}
		v1, v2, latest := count("m@1", q, "--format", "csv"), count("m@2", q, "--format", "csv"), count("m", q, "--format", "csv")
		if v1 != "n\n10\n" || v2 != "n\n15\n" || latest != v2 {
			t.Errorf("%s: m@1 %q, m@2 %q, m %q", mode, v1, v2, latest)
		}
		if same := count("m@1", q, "--format", "csv", "--version", "1"); same != v1 {
			t.Errorf("%s: m@1 --version 1: %q", mode, same)
		}
		if got := count("m", q, "--format", "csv", "--version", "1"); got != v1 {
			t.Errorf("%s: --version 1: %q", mode, got)
		}
	}
	for _, args := range [][]string{{"m@1", q, "--version", "2"}, {"m@x", q}, {"m@0", q}} {
		_, errOut, code := teactl(t, ctx, env, append([]string{"query"}, args...)...)
		if code == 0 || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d: %q", args, code, errOut)
		}
	}
}
