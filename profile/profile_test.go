package profile

import (
	"context"
	"database/sql"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// flights loads the 3M-row flights file (scripts/fetch-flights.sh) into an
// in-memory DuckDB and returns a connection and the table's columns.
func flights(t *testing.T) (*sql.Conn, []snapshot.Column) {
	t.Helper()
	path, err := filepath.Abs("../data/flights-3m.parquet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no flights data (scripts/fetch-flights.sh): %v", err)
	}
	return memTable(t, duck.Options{Threads: 2, ExternalAccess: true}, "CREATE TABLE flights AS SELECT * FROM read_parquet("+duck.Literal(path)+")")
}

// memTable runs create (a CREATE TABLE) in a new in-memory DuckDB opened
// with opts and returns a connection to it and the table's columns (the
// first table's, DescribeCurrent); both are closed when t ends.
func memTable(t *testing.T, opts duck.Options, create string) (*sql.Conn, []snapshot.Column) {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, create); err != nil {
		t.Fatal(err)
	}
	tables, err := snapshot.DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	return conn, tables[0].Columns
}

func build(t *testing.T, conn *sql.Conn, cols []snapshot.Column, where string) *Profile {
	t.Helper()
	start := time.Now()
	p, err := Build(context.Background(), conn, "flights", cols, where)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Build %q: %d rows in %v", where, p.Rows, time.Since(start))
	return p
}

// TestFlightsAccuracy compares a profile of the flights table with DuckDB's
// exact answers: distinct counts within 3 standard errors, the top 10
// values of every column where their counts are separated by more than
// the sketch's error, nulls, min and max exactly.
func TestFlightsAccuracy(t *testing.T) {
	conn, cols := flights(t)
	ctx := context.Background()
	p := build(t, conn, cols, "")
	data, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d columns, profile %d bytes encoded", len(cols), len(data))
	if p, err = Decode(data); err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Columns {
		id := duck.Ident(c.Name)
		var exact, nonNull int64
		var lo, hi sql.NullString
		if err := conn.QueryRowContext(ctx, "SELECT count(DISTINCT "+id+"), count("+id+"), min("+id+")::VARCHAR, max("+id+")::VARCHAR FROM flights").Scan(&exact, &nonNull, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		est := float64(c.Distinct())
		rel := math.Abs(est-float64(exact)) / math.Max(1, float64(exact))
		t.Logf("%s %s: distinct %d, estimate %.0f (%.2f%%), nulls %d, min %v, max %v", c.Name, c.Type, exact, est, 100*rel, c.Nulls, c.Min, c.Max)
		if rel > 3*StdError {
			t.Errorf("%s: distinct estimate %.0f, exact %d: off by %.2f%%, more than 3 standard errors (%.2f%%)", c.Name, est, exact, 100*rel, 300*StdError)
		}
		if c.Nulls != p.Rows-nonNull {
			t.Errorf("%s: %d nulls, want %d", c.Name, c.Nulls, p.Rows-nonNull)
		}
		if lo.Valid && (c.Min == nil || c.Min.Text != lo.String || c.Max.Text != hi.String) {
			t.Errorf("%s: min %v max %v, want %s %s", c.Name, c.Min, c.Max, lo.String, hi.String)
		}
		checkTop(t, conn, c, nonNull)
	}
}

// checkTop compares c's top values with the exact top 10 where the counts
// are separated by more than the frequency sketch's error.
func checkTop(t *testing.T, conn *sql.Conn, c *Column, nonNull int64) {
	t.Helper()
	id := duck.Ident(c.Name)
	rows, err := conn.QueryContext(context.Background(), "SELECT "+id+"::VARCHAR, count(*) FROM flights WHERE "+id+" IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 11")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var want []Value
	for rows.Next() {
		var v Value
		if err := rows.Scan(&v.Text, &v.Low); err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
	}
	errBound := int64(Epsilon * float64(nonNull))
	got := c.TopValues()
	for i := 0; i < len(want) && i < TopK; i++ {
		separated := (i == 0 || want[i-1].Low-want[i].Low > errBound) && (i+1 >= len(want) || want[i].Low-want[i+1].Low > errBound)
		if !separated {
			continue
		}
		if i >= len(got) || got[i].Text != want[i].Text || got[i].Low > want[i].Low || got[i].High < want[i].Low || got[i].High-want[i].Low > errBound {
			t.Errorf("%s: top %d is %+v, want %q (%d rows, error bound %d)", c.Name, i+1, got, want[i].Text, want[i].Low, errBound)
			return
		}
	}
}

// TestMergeHalves: the merge of the profiles of two halves of the flights
// table (by rowid) equals, in estimate, the profile of the whole table.
func TestMergeHalves(t *testing.T) {
	conn, cols := flights(t)
	whole := build(t, conn, cols, "")
	a := build(t, conn, cols, "rowid < 1234567")
	b := build(t, conn, cols, "rowid >= 1234567")
	m, err := Merge(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rows != whole.Rows {
		t.Fatalf("merged %d rows, whole %d", m.Rows, whole.Rows)
	}
	for i, c := range m.Columns {
		w := whole.Columns[i]
		if c.Nulls != w.Nulls || c.Distinct() != w.Distinct() || (w.Min != nil && (c.Min.Text != w.Min.Text || c.Max.Text != w.Max.Text)) {
			t.Errorf("%s: merged nulls %d distinct %d min %v max %v; whole %d %d %v %v", c.Name, c.Nulls, c.Distinct(), c.Min, c.Max, w.Nulls, w.Distinct(), w.Min, w.Max)
		}
		if w.cms != nil && !equalCells(c.cms.cells, w.cms.cells) {
			t.Errorf("%s: merged frequency sketch differs from the whole table's", c.Name)
		}
		errBound := int64(Epsilon * float64(whole.Rows-w.Nulls))
		for j, v := range w.TopValues() {
			if j >= len(c.Top) || c.Top[j].Text != v.Text {
				// a reordering among counts closer than the error is allowed
				if j < len(c.Top) && abs(c.Top[j].High-v.High) <= errBound {
					continue
				}
				t.Errorf("%s: merged top %d %+v, whole %+v", c.Name, j+1, c.TopValues(), w.TopValues())
				break
			}
			if c.Top[j].Low > v.Low || c.Top[j].High < v.Low {
				t.Errorf("%s: merged %q has bounds %d..%d, its count is %d", c.Name, v.Text, c.Top[j].Low, c.Top[j].High, v.Low)
			}
		}
	}
}

func equalCells(a, b []uint64) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// TestTopTiesByValue: among values of equal count, the candidates are the
// least in DuckDB's order of the column's type (0..20 for integers seen
// once each), not in their text's order ("0", "1", "10", "100", ...).
func TestTopTiesByValue(t *testing.T) {
	ctx := context.Background()
	conn, cols := memTable(t, duck.Options{Threads: 1}, "CREATE TABLE t AS SELECT 999 - range AS k FROM range(1000)")
	p, err := Build(ctx, conn, "t", cols, "")
	if err != nil {
		t.Fatal(err)
	}
	c := p.Columns[0]
	var got []string
	for _, v := range c.Top {
		got = append(got, v.Text)
	}
	// sorted by text, as every candidate list
	want := []string{"0", "1", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "2", "3", "4", "5", "6", "7", "8", "9"}
	if !slices.Equal(got, want) || c.Others != 1 {
		t.Errorf("candidates %v, others %d; want %v, others 1", got, c.Others, want)
	}
}
