package bench

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/reader"
)

// groupShards is the group of scenario 4f: flights split by month into
// six models (the six rows of July go with June).
const groupShards = "shards"

// fanOutMonthly is 4b without its quantile: the monthly aggregate whose
// partials merge, for the fan-out path.
const fanOutMonthly = "SELECT date_trunc('month', date)::DATE AS month, origin, count(*) AS flights, avg(delay) AS avg_delay, " +
	"avg(CASE WHEN delay > 15 THEN 1.0 ELSE 0.0 END) AS late_share, avg(distance) AS avg_distance " +
	"FROM flights GROUP BY ALL ORDER BY month, origin"

// groupQueries is scenario 4f, run while the reader of readerQueries
// serves: the monthly aggregate over the six monthly shards of the
// flights file (six models in one group) through the reader, by the
// single-reader path (4f: 4b's query, its quantile included) and by
// fan-out (4ff: fanOutMonthly), each against DuckDB in this process on
// the whole Parquet file (same threads and memory_limit), and the results
// compared (numbers to a relative 1e-9).
func (b *bench) groupQueries(ctx context.Context) ([]Result, error) {
	file, err := b.flightsFile(ctx)
	if err != nil {
		return nil, err
	}
	base, err := duck.Open(ctx, "", duck.Options{Threads: b.cfg.Threads, MemoryLimit: b.cfg.MemoryLimit, ExternalAccess: true})
	if err != nil {
		return nil, err
	}
	defer base.Close()
	var members []string
	for k := 1; k <= 6; k++ {
		m := fmt.Sprintf("shard-%d", k)
		shard := filepath.Join(b.dir, m+".parquet")
		where := fmt.Sprintf("month(date) = %d", k)
		if k == 6 {
			where = "month(date) >= 6"
		}
		if _, err := base.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM read_parquet(%s) WHERE %s) TO %s (FORMAT parquet)", duck.Literal(file), where, duck.Literal(shard))); err != nil {
			return nil, fmt.Errorf("bench: shard %d: %w", k, err)
		}
		if err := b.createModelWith(ctx, controldb.Model{ID: m, Group: groupShards}); err != nil {
			return nil, err
		}
		if _, _, err := b.teactl(ctx, "append", m, "flights", shard, "--wait"); err != nil {
			return nil, err
		}
		members = append(members, m)
	}
	whole := strings.Replace(queries[1].sql, "FROM flights", "FROM read_parquet("+duck.Literal(file)+")", 1)
	union := Result{ID: "4f", Name: "monthly aggregate (4b) over six monthly shards in a group, through a warm reader attaching them (Go client)", Unit: "ms",
		BaseName: "DuckDB in this process on the whole Parquet file", Target: "ratio <= 1.5, results equal"}
	fan := Result{ID: "4ff", Name: "monthly aggregate without its quantile over the six shards by fan-out (a partial per member through the reader, merged in the client)", Unit: "ms",
		BaseName: "DuckDB in this process on the whole Parquet file", Target: "reported, results equal"}
	runUnion := func() ([][]string, error) {
		res, err := reader.QueryGroup(ctx, b.nc, groupShards, queries[1].sql, reader.Options{Render: "csv"})
		if err != nil {
			return nil, err
		}
		defer res.Close()
		var out [][]string
		for res.Next() {
			out = append(out, textRows(res.RecordBatch())...)
		}
		return out, res.Err()
	}
	runFan := func() ([][]string, error) {
		f, err := reader.QueryFanOut(ctx, b.nc, members, fanOutMonthly, reader.Options{})
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return textQuery(ctx, f.DB, reader.RenderSQL(f.SQL, "csv"))
	}
	fanWhole := strings.Replace(fanOutMonthly, "FROM flights", "FROM read_parquet("+duck.Literal(file)+")", 1)
	for _, c := range []struct {
		res   *Result
		run   func() ([][]string, error)
		whole string
	}{{&union, runUnion, whole}, {&fan, runFan, fanWhole}} {
		var tt, bt []float64
		equal := true
		for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
			t0 := time.Now()
			got, err := c.run()
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", c.res.ID, err)
			}
			d := time.Since(t0)
			t0 = time.Now()
			want, err := textQuery(ctx, base, reader.RenderSQL(c.whole, "csv"))
			if err != nil {
				return nil, fmt.Errorf("bench: %s baseline: %w", c.res.ID, err)
			}
			bd := time.Since(t0)
			equal = equal && sameRows(want, got)
			if r > 0 {
				tt, bt = append(tt, ms(d)), append(bt, ms(bd))
			}
		}
		c.res.Teatree, c.res.Baseline = newStat(tt), ptr(newStat(bt))
		c.res.setRatio("reader ms / DuckDB ms")
		c.res.Extra = map[string]any{"results_equal": equal, "members": len(members)}
		b.progress("%s: %.0f ms, DuckDB on the whole file %.0f ms, equal %v", c.res.ID, c.res.Teatree.Median, c.res.Baseline.Median, equal)
	}
	union.Met = boolp(union.Ratio <= 1.5 && union.Extra["results_equal"] == true)
	return []Result{union, fan}, nil
}

// textRows are the rows of a batch of VARCHAR columns (NULL as "NULL").
func textRows(rec arrow.RecordBatch) [][]string {
	var out [][]string
	for i := 0; i < int(rec.NumRows()); i++ {
		row := make([]string, rec.NumCols())
		for j := range row {
			col := rec.Column(j).(*array.String)
			row[j] = "NULL"
			if col.IsValid(i) {
				row[j] = col.Value(i)
			}
		}
		out = append(out, row)
	}
	return out
}

// textQuery runs q (VARCHAR columns) on db.
func textQuery(ctx context.Context, db *sql.DB, q string) ([][]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = "NULL"
			if v.Valid {
				row[i] = v.String
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// sameRows: equal text, or numbers within a relative 1e-9 (floating sums
// added in another order).
func sameRows(want, got [][]string) bool {
	if len(want) != len(got) {
		return false
	}
	for i := range want {
		if len(want[i]) != len(got[i]) {
			return false
		}
		for j := range want[i] {
			w, g := want[i][j], got[i][j]
			if w == g {
				continue
			}
			wf, err1 := strconv.ParseFloat(w, 64)
			gf, err2 := strconv.ParseFloat(g, 64)
			if err1 != nil || err2 != nil || math.Abs(wf-gf) > 1e-9*math.Max(math.Abs(wf), math.Abs(gf)) {
				return false
			}
		}
	}
	return true
}
