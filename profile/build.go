package profile

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// Build profiles the rows of main.table matching where ("" for all, e.g.
// "rowid >= 10 AND rowid < 20") as conn sees them, in conn's current
// transaction if it has one. cols are the table's columns (describe).
// DuckDB does the counting: one aggregate query for the counts, minima and
// maxima of every column, then per sketched column one query grouping its
// values, whose results (at most Candidates+1 values, 2^Precision registers
// and Width·Depth counters) fill the sketches.
//
// Every statement is prepared first: an error in DuckDB ends the current
// transaction, except at prepare time (binding, types), so a column Build
// cannot handle fails there and leaves the caller's transaction usable.
// An error while a statement runs (out of memory, cancelled) does end it.
func Build(ctx context.Context, conn *sql.Conn, table string, cols []snapshot.Column, where string) (*Profile, error) {
	p, _, err := BuildWith(ctx, conn, table, cols, where, nil)
	return p, err
}

// BuildWith is Build computing, in the same scan as its aggregate query,
// the aggregate SQL expressions aggregates over the same rows (e.g.
// "sum(hash(a, b))"), so that a caller needing more of those rows than
// their profile does not scan them again. It returns their values cast to
// VARCHAR, in order (NULL: not Valid). An aggregate DuckDB cannot bind
// fails Build at prepare time, as a column it cannot handle does.
func BuildWith(ctx context.Context, conn *sql.Conn, table string, cols []snapshot.Column, where string, aggregates []string) (*Profile, []sql.NullString, error) {
	from := " FROM main." + duck.Ident(table)
	cond := "true"
	if where != "" {
		cond = "(" + where + ")"
	}
	p := &Profile{}
	// inner aggregates, outer converts: TRY may not hold an aggregate
	inner, sel := []string{"count(*) AS n"}, []string{"n"}
	for i, c := range cols {
		col := newColumn(c.Name, c.Type)
		p.Columns = append(p.Columns, col)
		id := duck.Ident(c.Name)
		mn, mx := fmt.Sprintf("mn%d", i), fmt.Sprintf("mx%d", i)
		inner = append(inner, fmt.Sprintf("count(%s) AS c%d", id, i))
		sel = append(sel, fmt.Sprintf("c%d", i))
		k := kindOf(c.Type)
		if k == kindNested {
			continue
		}
		inner = append(inner, "min("+id+") AS "+mn, "max("+id+") AS "+mx)
		sel = append(sel, mn+"::VARCHAR", mx+"::VARCHAR")
		if k == kindTime {
			ts := "::TIMESTAMP"
			if t := strings.ToUpper(c.Type); strings.Contains(t, "TIME ZONE") || t == "TIMESTAMPTZ" {
				ts = ""
			}
			sel = append(sel, "try(epoch_us("+mn+ts+"))", "try(epoch_us("+mx+ts+"))")
		}
	}
	extra := make([]sql.NullString, len(aggregates))
	for i, e := range aggregates {
		inner = append(inner, fmt.Sprintf("%s AS x%d", e, i))
		sel = append(sel, fmt.Sprintf("x%d::VARCHAR", i))
	}
	// One row: count(*), then per column count, and unless nested min and
	// max (and for temporal types their microseconds), then the extra
	// aggregates.
	dest := []any{&p.Rows}
	type agg struct {
		count            int64
		min, max         sql.NullString
		minUs, maxUs     sql.NullInt64
		hasBounds, micro bool
	}
	aggs := make([]agg, len(cols))
	for i, c := range cols {
		a := &aggs[i]
		dest = append(dest, &a.count)
		switch kindOf(c.Type) {
		case kindNested:
		case kindTime:
			a.hasBounds, a.micro = true, true
			dest = append(dest, &a.min, &a.max, &a.minUs, &a.maxUs)
		default:
			a.hasBounds = true
			dest = append(dest, &a.min, &a.max)
		}
	}
	for i := range extra {
		dest = append(dest, &extra[i])
	}
	st, err := conn.PrepareContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM (SELECT "+strings.Join(inner, ", ")+from+" WHERE "+cond+")")
	if err != nil {
		return nil, nil, fmt.Errorf("profile: count the columns of %s: %w", table, err)
	}
	defer st.Close()
	if err := st.QueryRowContext(ctx).Scan(dest...); err != nil {
		return nil, nil, fmt.Errorf("profile: count the columns of %s: %w", table, err)
	}
	for i, c := range p.Columns {
		a := aggs[i]
		c.Nulls = p.Rows - a.count
		if a.hasBounds && a.min.Valid {
			c.Min = &Bound{Text: a.min.String, Micros: a.minUs.Int64, HasMicros: a.minUs.Valid}
			c.Max = &Bound{Text: a.max.String, Micros: a.maxUs.Int64, HasMicros: a.maxUs.Valid}
		}
		if c.distinct == nil || a.count == 0 {
			continue
		}
		if err := sketch(ctx, conn, from, cond, c); err != nil {
			return nil, nil, fmt.Errorf("profile: sketch column %s of %s: %w", c.Name, table, err)
		}
	}
	return p, extra, nil
}

// sketch fills c's candidates and sketches from one query over the column's
// values grouped: kind 0 the Candidates+1 most frequent (hash, count,
// text), kind 1 per HyperLogLog register the least low bits of a hash
// (inserting that hash alone sets the register as inserting all would),
// kind 2 per count-min counter its count.
func sketch(ctx context.Context, conn *sql.Conn, from, cond string, c *Column) error {
	id := duck.Ident(c.Name)
	// counter of row i, as cell computes it (unnest: a join with range(Depth) is 8× slower)
	cells := make([]string, Depth)
	for i := range cells {
		cells[i] = fmt.Sprintf("%d + ((h & 4294967295) + %d * (h >> 32)) %% %d", i*Width, i, Width)
	}
	low := fmt.Sprintf("%d", uint64(1)<<(64-Precision)-1)
	q := "WITH g AS MATERIALIZED (SELECT hash(v) AS h, n, v FROM (SELECT " + id + " AS v, count(*) AS n" + from + " WHERE " + cond + " AND " + id + " IS NOT NULL GROUP BY " + id + "))" +
		" (SELECT 0::UTINYINT AS k, h AS a, n::UBIGINT AS b, v::VARCHAR AS t FROM g ORDER BY n DESC, t LIMIT " + fmt.Sprint(Candidates+1) + ")" +
		" UNION ALL SELECT 1, h >> " + fmt.Sprint(64-Precision) + ", min(h & " + low + "::UBIGINT), NULL FROM g GROUP BY 2" +
		" UNION ALL SELECT 2, c, sum(n)::UBIGINT, NULL FROM (SELECT unnest([" + strings.Join(cells, ", ") + "]) AS c, n FROM g) GROUP BY c"
	st, err := conn.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer st.Close()
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k uint8
		var a, b uint64
		var t sql.NullString
		if err := rows.Scan(&k, &a, &b, &t); err != nil {
			return err
		}
		switch k {
		case 0:
			c.Top = append(c.Top, Value{Text: t.String, Hash: a, Low: int64(b), High: int64(b)})
		case 1:
			c.distinct.InsertHash(a<<(64-Precision) | b)
		case 2:
			if a >= uint64(len(c.cms.cells)) {
				return fmt.Errorf("counter %d out of range", a)
			}
			c.cms.cells[a] = b
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	sortTop(c.Top)
	if len(c.Top) > Candidates {
		c.Others = c.Top[Candidates].High
		c.Top = c.Top[:Candidates]
	}
	return nil
}
