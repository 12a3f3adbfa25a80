package profile

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// TestMergeTypes: for columns of many types (with NULLs, NaN, infinities,
// BC dates, text that orders differently from its numbers), the merge of
// the profiles of every row alone equals the profile of all rows: min, max,
// nulls, distinct and the frequent values, and the merge survives
// MarshalBinary and Decode.
func TestMergeTypes(t *testing.T) {
	ctx := context.Background()
	conn, cols := memTable(t, duck.Options{Threads: 1}, `CREATE TABLE t AS SELECT * FROM (VALUES
		(9, 2.5::DECIMAL(9,2), 'nan'::DOUBLE, DATE '2020-01-01', TIMESTAMP '2020-01-01 10:00:00.5', TIMESTAMPTZ '2020-01-01 00:00:00+00', 'b', true, [1], HUGEINT '170141183460469231731687303715884105727', 1::UBIGINT),
		(10, 14.00, -1e300, DATE '0044-03-15 (BC)', TIMESTAMP '2020-01-01 10:00:00.25', TIMESTAMPTZ 'infinity', 'a', false, NULL, -5, 18446744073709551615::UBIGINT),
		(-3, NULL, 'inf'::DOUBLE, 'infinity'::DATE, TIMESTAMP '-infinity', NULL, 'b', NULL, [2, 3], 12, 2),
		(NULL, -0.01, 0.5, DATE '2020-01-02', TIMESTAMP '1969-12-31 23:59:59', TIMESTAMPTZ '1900-01-01 00:00:00+00', 'ab', true, [], NULL, NULL)
	) v(i, dec, dbl, d, ts, tz, s, b, l, h, u)`)
	whole, err := Build(ctx, conn, "t", cols, "")
	if err != nil {
		t.Fatal(err)
	}
	var parts []*Profile
	for _, w := range []string{"rowid = 3", "rowid = 1", "rowid = 0", "rowid = 2", "false"} {
		p, err := Build(ctx, conn, "t", cols, w)
		if err != nil {
			t.Fatal(err)
		}
		data, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if p, err = Decode(data); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	m, err := MergeAll(parts)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range m.Columns {
		w := whole.Columns[i]
		text := func(b *Bound) string {
			if b == nil {
				return "<nil>"
			}
			return b.Text
		}
		if text(c.Min) != text(w.Min) || text(c.Max) != text(w.Max) || c.Nulls != w.Nulls || c.Distinct() != w.Distinct() {
			t.Errorf("%s %s: merged min %s max %s nulls %d distinct %d; whole %s %s %d %d", c.Name, c.Type, text(c.Min), text(c.Max), c.Nulls, c.Distinct(), text(w.Min), text(w.Max), w.Nulls, w.Distinct())
		}
		if len(c.Top) != len(w.Top) {
			t.Errorf("%s: merged top %+v, whole %+v", c.Name, c.Top, w.Top)
			continue
		}
		for j := range c.Top {
			if c.Top[j] != w.Top[j] {
				t.Errorf("%s: merged top %+v, whole %+v", c.Name, c.Top, w.Top)
				break
			}
		}
	}
}

// TestBuildErrorKeepsTransaction: a Build that fails (here a column the
// table lacks) fails at prepare time, leaving the caller's transaction
// usable: the archive then publishes the data file without its profile.
func TestBuildErrorKeepsTransaction(t *testing.T) {
	ctx := context.Background()
	conn, _ := memTable(t, duck.Options{Threads: 1}, "CREATE TABLE t AS SELECT range AS i FROM range(10)")
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	for _, cols := range [][]snapshot.Column{{{Name: "gone", Type: "INTEGER"}}, {{Name: "i", Type: "BIGINT"}, {Name: "gone", Type: "VARCHAR"}}} {
		if _, err := Build(ctx, conn, "t", cols, ""); err == nil {
			t.Fatalf("Build of columns %v: no error", cols)
		}
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 10 {
		t.Fatalf("after a failed Build the transaction reads %d rows, %v", n, err)
	}
}

// TestColumnNamesLikeAliases: columns named like the aliases Build's
// queries use (n, v, h, k, a, b, t, c, mn0) are profiled as themselves.
func TestColumnNamesLikeAliases(t *testing.T) {
	ctx := context.Background()
	conn, cols := memTable(t, duck.Options{Threads: 1}, `CREATE TABLE "we""ird" AS SELECT range % 2 AS n, range % 3 AS v, range % 4 AS h, range % 5 AS k, range % 6 AS a, range % 7 AS b, range % 8 AS t, range % 9 AS c, range % 10 AS mn0, range % 11 AS "x y" FROM range(100)`)
	p, err := Build(ctx, conn, `we"ird`, cols, "rowid < 50")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range p.Columns {
		want := uint64(i + 2)
		if c.Distinct() != want || c.Max.Text != fmt.Sprint(want-1) || len(c.Top) != int(want) || c.Top[0].High != int64((50+want-1)/want) {
			t.Errorf("%s: distinct %d max %s top %+v; want %d distinct values, max %d", c.Name, c.Distinct(), c.Max.Text, c.Top, want, want-1)
		}
	}
}

// TestMergeIsSketchOfUnion: the merge of the profiles of two overlapping
// halves of a table (values in both, values in one) has exactly the
// sketches of the profile of the whole table: the same HyperLogLog
// registers and count-min counters, rows and nulls summed, min and max of
// both, and the frequent values' bounds holding the true counts.
func TestMergeIsSketchOfUnion(t *testing.T) {
	ctx := context.Background()
	// k: 0..999 in the first half, 500..1499 in the second, skewed so
	// that the top values differ between the halves.
	conn, cols := memTable(t, duck.Options{Threads: 1}, `CREATE TABLE t AS SELECT range AS id,
		CASE WHEN range % 7 = 0 THEN NULL WHEN range < 30000 THEN (range * range) % 1000 ELSE 500 + (range * range) % 1000 END AS k,
		'v' || (range % 97) AS s FROM range(60000)`)
	whole, err := Build(ctx, conn, "t", cols, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(ctx, conn, "t", cols, "id < 30000")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(ctx, conn, "t", cols, "id >= 30000")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rows != whole.Rows {
		t.Fatalf("merged %d rows, whole %d", m.Rows, whole.Rows)
	}
	for i, c := range m.Columns {
		w := whole.Columns[i]
		hm, _ := c.distinct.MarshalBinary()
		hw, _ := w.distinct.MarshalBinary()
		if string(hm) != string(hw) || !slices.Equal(c.cms.cells, w.cms.cells) {
			t.Errorf("%s: the merged sketches are not the whole table's (distinct %d vs %d)", c.Name, c.Distinct(), w.Distinct())
		}
		if c.Nulls != w.Nulls || c.Min.Text != w.Min.Text || c.Max.Text != w.Max.Text {
			t.Errorf("%s: merged nulls %d min %s max %s; whole %d %s %s", c.Name, c.Nulls, c.Min.Text, c.Max.Text, w.Nulls, w.Min.Text, w.Max.Text)
		}
		for _, v := range c.Top {
			var exact int64
			if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM t WHERE "+duck.Ident(c.Name)+"::VARCHAR = ?", v.Text).Scan(&exact); err != nil {
				t.Fatal(err)
			}
			if exact < v.Low || exact > v.High {
				t.Errorf("%s: value %s counted %d..%d, exactly %d", c.Name, v.Text, v.Low, v.High, exact)
			}
		}
	}
}

// TestBuildWithAggregates: the extra aggregates of BuildWith are computed
// over the rows profiled (equal to a query of their own), next to columns
// named like their aliases (x0, x1).
func TestBuildWithAggregates(t *testing.T) {
	ctx := context.Background()
	conn, cols := memTable(t, duck.Options{Threads: 1}, "CREATE TABLE t AS SELECT range AS x0, 'r' || range AS x1 FROM range(1000)")
	aggs := []string{"coalesce(sum(hash(x0, x1)), 0)", "max(x1)", "min(x0) FILTER (WHERE x0 > 5000)"}
	p, got, err := BuildWith(ctx, conn, "t", cols, "rowid >= 100 AND rowid < 300", aggs)
	if err != nil {
		t.Fatal(err)
	}
	var want [3]sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT "+aggs[0]+"::VARCHAR, "+aggs[1]+"::VARCHAR, ("+aggs[2]+")::VARCHAR FROM t WHERE rowid >= 100 AND rowid < 300").Scan(&want[0], &want[1], &want[2]); err != nil {
		t.Fatal(err)
	}
	if p.Rows != 200 || len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2].Valid {
		t.Errorf("BuildWith: %d rows, aggregates %+v; want 200 and %+v", p.Rows, got, want)
	}
	if c := p.Columns[0]; c.Min.Text != "100" || c.Max.Text != "299" || c.Distinct() < 197 || c.Distinct() > 203 {
		t.Errorf("column x0: min %s max %s distinct %d; want 100, 299, 200 within 3 standard errors", c.Min.Text, c.Max.Text, c.Distinct())
	}
	if _, _, err := BuildWith(ctx, conn, "t", cols, "", []string{"sum(nope)"}); err == nil {
		t.Error("BuildWith of an aggregate over a missing column: no error")
	}
}
