package reader

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/sqlast"
)

// A fan-out query spreads one query over a group by sending one partial
// query per member to teatree.query.<member> (the readers' queue group
// spreads them over every running reader), and merges the partial
// results in an in-memory DuckDB of the caller (parqueryd's controller
// with the merge it leaves to its caller done here). The single-reader
// path (QueryGroup: one reader attaches every member) answers every query
// exactly; the fan-out path answers the queries whose partials merge
// exactly, and refuses the others with ErrNotMergeable naming the part
// that does not merge:
//
//   - An aggregate query: one SELECT over one table of the model (no join,
//     subquery, CTE, window, HAVING, QUALIFY, GROUPING SETS/ROLLUP/CUBE),
//     optionally WHERE and GROUP BY (ALL), whose select items are each
//     either free of aggregates (a group key, or a function of them) or
//     one of the mergeable aggregates at the top: count(*), count(x),
//     sum(x), min(x), max(x), avg(x) (mean), each with or without
//     FILTER (WHERE …), and count/sum/avg(DISTINCT x). Each member runs
//     the query with its aggregates replaced by partials (avg by sum and
//     count, a DISTINCT aggregate by list(DISTINCT x)) and the group keys
//     the select list lacks added; the merge adds counts and sums, takes
//     min of mins and max of maxes, divides summed sums by summed counts,
//     and applies a DISTINCT aggregate to the union of the members'
//     distinct sets (at most MaxFanOutDistinct values in all, else
//     ErrLimit). Then ORDER BY, LIMIT and DISTINCT apply to the merged
//     rows.
//   - A query without aggregates or GROUP BY gathers rows: each member
//     runs it whole (its ORDER BY and LIMIT included, so each sends at
//     most LIMIT rows), and ORDER BY and LIMIT apply again to the union.
//
// ORDER BY items must name an output column (alias or position) or repeat
// a select item. Every merged column has the type and name the query has
// on one model (DESCRIBE of the query over an empty table with the
// schema of the first member holding it). A member without the table
// adds no rows (as in the single-reader path); a member that fails fails
// the query with its name, unless Options.Partial.
//
// Floating sums and averages may differ from the single-reader result in
// the last bits (the additions happen in another order).

// ErrNotMergeable is the error of a fan-out query whose partial results
// cannot be merged exactly; its message says which part and to run the
// query without fan-out.
var ErrNotMergeable = errors.New("not mergeable over members")

// MaxFanOutDistinct bounds the values of a DISTINCT aggregate's distinct
// sets gathered from the members of one fan-out query.
const MaxFanOutDistinct = 10_000_000

// FanOut is the merged result of a fan-out query: run SQL on DB (an
// in-memory DuckDB holding the merged partials as the view "merged") to
// read it, then Close.
type FanOut struct {
	DB      *sql.DB
	SQL     string
	Members []Member      // the members queried, with their versions
	Failed  []MemberError // the members left out (Options.Partial)
}

// Close closes the DuckDB holding the result.
func (f *FanOut) Close() error { return f.DB.Close() }

// QueryFanOut runs sql over members (the models of a group) through the
// readers on nc by fan-out (see above) and returns the merged result.
// Errors: ErrNotMergeable (wrapping model.ErrInvalid) for a query whose
// partials do not merge, the refusals of Query for a member (prefixed
// with its name), ErrNoReader when no reader answers.
func QueryFanOut(ctx context.Context, nc *nats.Conn, members []string, query string, opts Options) (*FanOut, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: fan-out: the group has no members", model.ErrNotFound)
	}
	db, err := duck.Open(ctx, "", duck.Options{Threads: 2, MemoryLimit: "1GB"})
	if err != nil {
		return nil, fmt.Errorf("reader: fan-out: %w", err)
	}
	f := &FanOut{DB: db}
	if err := f.run(ctx, nc, members, query, opts); err != nil {
		db.Close()
		return nil, err
	}
	return f, nil
}

// memberResult is what one member returned: its version, the columns of
// the table the query reads (none: the member lacks it), and the partial
// result's record batches.
type memberResult struct {
	version int64
	columns [][2]string // name, DuckDB type
	schema  *arrow.Schema
	recs    []arrow.RecordBatch
	err     error
}

func (f *FanOut) run(ctx context.Context, nc *nats.Conn, members []string, query string, opts Options) error {
	conn, err := f.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	p, err := plan(ctx, conn, query)
	if err != nil {
		return err
	}
	// Each member: the table's columns (also: does it hold the table, at
	// which version), then the partial on that same version.
	res := make([]memberResult, len(members))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, m := range members {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res[i] = queryMember(ctx, nc, m, p, opts)
		})
	}
	wg.Wait()
	defer func() {
		for _, r := range res {
			for _, rec := range r.recs {
				rec.Release()
			}
		}
	}()
	var schemaOf *memberResult
	var loaded []int
	for i, m := range members {
		r := &res[i]
		if r.err != nil {
			if errors.Is(r.err, ErrNoReader) {
				return r.err
			}
			if !opts.Partial {
				return fmt.Errorf("member %s: %w", m, r.err)
			}
			msg, _, _ := strings.Cut(r.err.Error(), "\n")
			f.Failed = append(f.Failed, MemberError{Model: m, Error: msg})
			continue
		}
		f.Members = append(f.Members, Member{Model: m, Version: r.version})
		if len(r.columns) == 0 {
			continue
		}
		if schemaOf == nil {
			schemaOf = r
		}
		loaded = append(loaded, i)
	}
	if len(f.Members) == 0 {
		return fmt.Errorf("every member failed: %s: %s", f.Failed[0].Model, f.Failed[0].Error)
	}
	if schemaOf == nil {
		return fmt.Errorf("%w: fan-out: no member has a table %s", model.ErrNotFound, model.Quote(p.table))
	}
	final, err := p.describe(ctx, conn, schemaOf.columns)
	if err != nil {
		return err
	}
	var union []string
	for _, i := range loaded {
		name := fmt.Sprintf("p%d", i)
		if err := load(ctx, conn, name, res[i].schema, res[i].recs); err != nil {
			return fmt.Errorf("member %s: load the partial result: %w", members[i], err)
		}
		union = append(union, "SELECT * FROM "+name)
	}
	cols := make([]string, p.width)
	for i := range cols {
		cols[i] = fmt.Sprintf("c%d", i)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE VIEW partials(%s) AS %s", strings.Join(cols, ", "), strings.Join(union, " UNION ALL "))); err != nil {
		return fmt.Errorf("reader: fan-out: the union of the partials: %w", err)
	}
	if err := p.checkDistinct(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "CREATE VIEW merged AS "+p.merge(final)); err != nil {
		return fmt.Errorf("reader: fan-out: the merge: %w", err)
	}
	f.SQL, err = p.finalSQL(ctx, conn, final)
	return err
}

// queryMember asks member m for the columns of the planned table, then
// runs the partial query on the same version.
func queryMember(ctx context.Context, nc *nats.Conn, m string, p *fanOutPlan, opts Options) memberResult {
	var r memberResult
	probe := "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = " +
		duck.Literal(p.table) + " ORDER BY column_index"
	o := opts
	o.Render, o.Partial = "", false
	res, err := Query(ctx, nc, m, probe, o)
	if err != nil {
		r.err = err
		return r
	}
	r.version = res.Version
	for res.Next() {
		rec := res.RecordBatch()
		names, types := rec.Column(0).(*array.String), rec.Column(1).(*array.String)
		for j := range int(rec.NumRows()) {
			r.columns = append(r.columns, [2]string{names.Value(j), types.Value(j)})
		}
	}
	r.err = res.Err()
	res.Close()
	if r.err != nil || len(r.columns) == 0 {
		return r
	}
	o.Version = r.version
	res, err = Query(ctx, nc, m, p.partial, o)
	if err != nil {
		r.err = err
		return r
	}
	defer res.Close()
	r.schema = res.Schema()
	for res.Next() {
		rec := res.RecordBatch()
		rec.Retain()
		r.recs = append(r.recs, rec)
	}
	r.err = res.Err()
	return r
}

// load makes recs the table name on conn.
func load(ctx context.Context, conn *sql.Conn, name string, schema *arrow.Schema, recs []arrow.RecordBatch) error {
	rr, err := array.NewRecordReader(schema, recs)
	if err != nil {
		return err
	}
	defer rr.Release()
	view := name + "_arrow"
	release, err := duck.RegisterArrow(conn, rr, view)
	if err != nil {
		return err
	}
	defer release()
	_, err = conn.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s AS SELECT * FROM %s", name, view))
	return err
}

// An item is one select item of the query and how it merges.
type item struct {
	agg      string // "": no aggregate (a key); else count, sum, min, max, avg
	distinct bool   // a DISTINCT count, sum or avg: its partial is a list
	extra    int    // avg: the position of its count partial
}

// fanOutPlan is a query planned for fan-out.
type fanOutPlan struct {
	table    string
	doc      map[string]any   // the query's parsed document (sqlast.Parse)
	node     map[string]any   // its statement
	partial  string           // the SQL each member runs
	items    []item           // the query's select items, in order
	hidden   []any            // group keys added after the select items
	width    int              // columns of the partial result
	gather   bool             // no aggregate: the partials are rows
	order    []any            // the query's modifiers (ORDER BY, LIMIT, DISTINCT)
	keyNodes []map[string]any // the select items' nodes, for ORDER BY matching
}

// plan parses query on conn with DuckDB's own parser (json_serialize_sql)
// and builds its partial query (json_deserialize_sql of the rewritten
// statement) and merge.
func plan(ctx context.Context, conn *sql.Conn, query string) (*fanOutPlan, error) {
	if err := functions.ValidateSelect(query); err != nil {
		return nil, err
	}
	doc, node, err := sqlast.Parse(ctx, conn, query)
	if err != nil {
		return nil, fmt.Errorf("%w: query: %s", model.ErrInvalid, firstLine(err))
	}
	aggs, err := sqlast.Aggregates(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("reader: fan-out: %w", err)
	}
	p := &fanOutPlan{doc: doc, node: node}
	if err := p.build(node, aggs); err != nil {
		return nil, err
	}
	pn := sqlast.Copy(node).(map[string]any)
	list := make([]any, 0, p.width)
	sel := node["select_list"].([]any)
	for i, it := range p.items {
		n := sqlast.Copy(sel[i]).(map[string]any)
		switch {
		case it.agg == "":
		case it.distinct:
			n["function_name"], n["alias"] = "list", fmt.Sprintf("__fanout_a%d", i)
		case it.agg == "avg":
			n["function_name"], n["alias"] = "sum", fmt.Sprintf("__fanout_a%d", i)
		default:
			n["alias"] = fmt.Sprintf("__fanout_a%d", i)
		}
		list = append(list, n)
	}
	for i, it := range p.items {
		if it.agg == "avg" && !it.distinct {
			n := sqlast.Copy(sel[i]).(map[string]any)
			n["function_name"], n["alias"] = "count", fmt.Sprintf("__fanout_n%d", i)
			list = append(list, n)
		}
	}
	for _, g := range p.hidden {
		list = append(list, sqlast.Copy(g))
	}
	pn["select_list"] = list
	if !p.gather {
		pn["modifiers"] = []any{}
	}
	p.partial, err = sqlast.Deserialize(ctx, conn, doc, pn)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// build checks node and classifies its select items.
func (p *fanOutPlan) build(node map[string]any, aggs map[string]bool) error {
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("%w: fan-out: %s: %w; run the query without fan-out (one reader attaches every member)", model.ErrInvalid, fmt.Sprintf(format, a...), ErrNotMergeable)
	}
	if t, _ := node["type"].(string); t != "SELECT_NODE" {
		return refuse("a %s", strings.ToLower(strings.TrimSuffix(t, "_NODE")))
	}
	if cte, _ := node["cte_map"].(map[string]any); cte != nil {
		if m, _ := cte["map"].([]any); len(m) > 0 {
			return refuse("a WITH clause")
		}
	}
	from, _ := node["from_table"].(map[string]any)
	if t, _ := from["type"].(string); t != "BASE_TABLE" {
		return refuse("FROM must name one table, not a %s", strings.ToLower(t))
	}
	if s, _ := from["schema_name"].(string); s != "" && s != "main" {
		return refuse("FROM %s.%s: a table of schema main", s, from["table_name"])
	}
	if c, _ := from["catalog_name"].(string); c != "" {
		return refuse("FROM %s.…: a table of the model", c)
	}
	p.table, _ = from["table_name"].(string)
	for _, k := range []string{"having", "qualify", "sample"} {
		if node[k] != nil {
			return refuse("%s", strings.ToUpper(k))
		}
	}
	if from["sample"] != nil {
		return refuse("TABLESAMPLE")
	}
	if sets, _ := node["group_sets"].([]any); len(sets) > 1 {
		return refuse("GROUPING SETS, ROLLUP or CUBE")
	}
	if w, ok := node["where_clause"]; ok && w != nil {
		if name := aggregateIn(w, aggs); name != "" {
			return refuse("an aggregate (%s) in WHERE", name)
		}
	}
	handling, _ := node["aggregate_handling"].(string)
	groups, _ := node["group_expressions"].([]any)
	sel, _ := node["select_list"].([]any)
	anyAgg := false
	for i, s := range sel {
		n, _ := s.(map[string]any)
		it := item{}
		if class, _ := n["class"].(string); class == "FUNCTION" && aggs[sqlast.Name(n)] {
			name := sqlast.Name(n)
			kind, ok := sqlast.Decomposable[name]
			if !ok {
				return refuse("select item %d: %s does not merge from partial results (count, sum, min, max and avg do)", i+1, name)
			}
			if d, _ := n["distinct"].(bool); d {
				switch kind {
				case "min", "max":
				case "count", "sum", "avg":
					it.distinct = true
				}
			}
			if exp, _ := n["export_state"].(bool); exp {
				return refuse("select item %d: EXPORT_STATE", i+1)
			}
			for _, c := range n["children"].([]any) {
				if name := aggregateIn(c, aggs); name != "" {
					return refuse("select item %d: an aggregate (%s) inside %s", i+1, name, kind)
				}
			}
			if f := n["filter"]; f != nil {
				if name := aggregateIn(f, aggs); name != "" {
					return refuse("select item %d: an aggregate (%s) in FILTER", i+1, name)
				}
			}
			it.agg, anyAgg = kind, true
		} else if name := aggregateIn(n, aggs); name != "" {
			return refuse("select item %d is an expression over an aggregate (%s): only an aggregate at the top of a select item merges", i+1, name)
		}
		if class, _ := n["class"].(string); class == "STAR" || class == "COLUMNS" {
			if anyAgg || len(groups) > 0 {
				return refuse("select item %d: * or COLUMNS(…) in an aggregate query", i+1)
			}
		}
		p.items = append(p.items, it)
		p.keyNodes = append(p.keyNodes, n)
	}
	p.gather = !anyAgg && len(groups) == 0 && handling != "FORCE_AGGREGATES"
	if handling == "NO_AGGREGATES_ALLOWED" {
		return refuse("GROUP BY ALL is spelled")
	}
	mods, _ := node["modifiers"].([]any)
	for _, m := range mods {
		mm, _ := m.(map[string]any)
		switch t, _ := mm["type"].(string); t {
		case "ORDER_MODIFIER":
			orders, _ := mm["orders"].([]any)
			for _, o := range orders {
				om, _ := o.(map[string]any)
				if p.orderTarget(om["expression"]) < 0 {
					return refuse("ORDER BY: order by an output column's name or position, or repeat a select item")
				}
			}
		case "LIMIT_MODIFIER":
			if mm["offset"] != nil {
				return refuse("OFFSET")
			}
			if l, _ := mm["limit"].(map[string]any); l != nil && l["class"] != "CONSTANT" {
				return refuse("LIMIT must be a number")
			}
		case "DISTINCT_MODIFIER":
			if on, _ := mm["distinct_on_targets"].([]any); len(on) > 0 {
				return refuse("DISTINCT ON")
			}
		default:
			return refuse("%s", strings.ToLower(strings.TrimSuffix(t, "_MODIFIER")))
		}
	}
	p.order = mods
	p.hidden = p.hiddenKeys(node)
	p.width = len(p.items) + len(p.hidden)
	for _, it := range p.items {
		if it.agg == "avg" && !it.distinct {
			p.width++
		}
	}
	return nil
}

// hiddenKeys are the group expressions that are not select items (by
// alias, position or the same expression): the partial adds them so the
// merge can group by them.
func (p *fanOutPlan) hiddenKeys(node map[string]any) []any {
	groups, _ := node["group_expressions"].([]any)
	var out []any
	for _, g := range groups {
		if i := p.orderTarget(g); i >= 0 && p.items[i].agg == "" {
			continue
		}
		out = append(out, g)
	}
	return out
}

// orderTarget is the select item expr refers to (a column named as an
// item's alias or output name, a position, or the same expression), or
// -1.
func (p *fanOutPlan) orderTarget(expr any) int {
	e, _ := expr.(map[string]any)
	if e == nil {
		return -1
	}
	switch e["class"] {
	case "CONSTANT":
		v, _ := e["value"].(map[string]any)
		if n, ok := v["value"].(json.Number); ok {
			if i, err := n.Int64(); err == nil && i >= 1 && int(i) <= len(p.items) {
				return int(i) - 1
			}
		}
		return -1
	case "COLUMN_REF":
		names, _ := e["column_names"].([]any)
		if len(names) == 1 {
			name, _ := names[0].(string)
			for i, n := range p.keyNodes {
				if a, _ := n["alias"].(string); a != "" && strings.EqualFold(a, name) {
					return i
				}
			}
		}
	}
	for i, n := range p.keyNodes {
		if sqlast.Same(n, e) {
			return i
		}
	}
	return -1
}

// describe returns the names and types of the query's result on one
// model: DESCRIBE of the query over an empty table with columns.
func (p *fanOutPlan) describe(ctx context.Context, conn *sql.Conn, columns [][2]string) ([][2]string, error) {
	defs := make([]string, len(columns))
	for i, c := range columns {
		defs[i] = duck.Ident(c[0]) + " " + c[1]
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE TABLE main.%s (%s)", duck.Ident(p.table), strings.Join(defs, ", "))); err != nil {
		return nil, fmt.Errorf("reader: fan-out: the table's schema: %w", err)
	}
	text, err := sqlast.Deserialize(ctx, conn, p.doc, p.node)
	if err != nil {
		return nil, err
	}
	rows, err := conn.QueryContext(ctx, "DESCRIBE "+text)
	if err != nil {
		return nil, fmt.Errorf("%w: query: %s", model.ErrInvalid, firstLine(err))
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][2]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, [2]string{fmt.Sprint(vals[0]), fmt.Sprint(vals[1])})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) != len(p.items) {
		return nil, fmt.Errorf("%w: fan-out: the query has %d columns, %d select items", model.ErrInvalid, len(out), len(p.items))
	}
	if _, err := conn.ExecContext(ctx, "DROP TABLE main."+duck.Ident(p.table)); err != nil {
		return nil, err
	}
	return out, nil
}

// checkDistinct refuses DISTINCT aggregates over more than
// MaxFanOutDistinct gathered values.
func (p *fanOutPlan) checkDistinct(ctx context.Context, conn *sql.Conn) error {
	var sums []string
	for i, it := range p.items {
		if it.distinct {
			sums = append(sums, fmt.Sprintf("coalesce(sum(len(c%d)), 0)", i))
		}
	}
	if len(sums) == 0 {
		return nil
	}
	var n int64
	if err := conn.QueryRowContext(ctx, "SELECT "+strings.Join(sums, " + ")+" FROM partials").Scan(&n); err != nil {
		return fmt.Errorf("reader: fan-out: %w", err)
	}
	if n > MaxFanOutDistinct {
		return fmt.Errorf("%w: fan-out: the members sent %d distinct values for DISTINCT aggregates, more than %d: run the query without fan-out", ErrLimit, n, MaxFanOutDistinct)
	}
	return nil
}

// merge is the SELECT over partials(c0, …) that merges them into the
// query's columns (final: names and types).
func (p *fanOutPlan) merge(final [][2]string) string {
	if p.gather {
		out := make([]string, len(p.items))
		for i := range p.items {
			out[i] = fmt.Sprintf("c%d AS %s", i, duck.Ident(final[i][0]))
		}
		return "SELECT " + strings.Join(out, ", ") + " FROM partials"
	}
	out := make([]string, len(p.items))
	var keys []string
	extra := len(p.items)
	for i, it := range p.items {
		c := fmt.Sprintf("c%d", i)
		var e string
		switch {
		case it.agg == "":
			e = c
			keys = append(keys, c)
		case it.distinct:
			fn := map[string]string{"count": "length", "sum": "list_sum", "avg": "list_avg"}[it.agg]
			e = fmt.Sprintf("%s(list_distinct(flatten(list(%s))))", fn, c)
		case it.agg == "count", it.agg == "sum":
			e = "sum(" + c + ")"
		case it.agg == "min", it.agg == "max":
			e = it.agg + "(" + c + ")"
		case it.agg == "avg":
			e = fmt.Sprintf("CAST(sum(%s) AS DOUBLE) / nullif(sum(c%d), 0)", c, extra)
			extra++
		}
		out[i] = fmt.Sprintf("CAST(%s AS %s) AS %s", e, final[i][1], duck.Ident(final[i][0]))
	}
	for j := range len(p.hidden) {
		keys = append(keys, fmt.Sprintf("c%d", extra+j))
	}
	q := "SELECT " + strings.Join(out, ", ") + " FROM partials"
	if len(keys) > 0 {
		q += " GROUP BY " + strings.Join(keys, ", ")
	}
	return q
}

// finalSQL is SELECT * FROM merged with the query's ORDER BY, LIMIT and
// DISTINCT, each ORDER BY item rewritten as its output column.
func (p *fanOutPlan) finalSQL(ctx context.Context, conn *sql.Conn, final [][2]string) (string, error) {
	mods := sqlast.Copy(p.order).([]any)
	for _, m := range mods {
		mm := m.(map[string]any)
		if mm["type"] != "ORDER_MODIFIER" {
			continue
		}
		for _, o := range mm["orders"].([]any) {
			om := o.(map[string]any)
			i := p.orderTarget(om["expression"])
			om["expression"] = map[string]any{"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "column_names": []any{final[i][0]}}
		}
	}
	node := map[string]any{
		"type":        "SELECT_NODE",
		"modifiers":   mods,
		"cte_map":     map[string]any{"map": []any{}},
		"select_list": []any{map[string]any{"class": "STAR", "type": "STAR", "alias": "", "relation_name": "", "exclude_list": []any{}, "replace_list": []any{}, "rename_list": []any{}, "columns": false, "expr": nil, "unpacked": false}},
		"from_table": map[string]any{"type": "BASE_TABLE", "alias": "", "sample": nil, "schema_name": "", "table_name": "merged",
			"column_name_alias": []any{}, "catalog_name": "", "at_clause": nil},
		"where_clause": nil, "group_expressions": []any{}, "group_sets": []any{},
		"aggregate_handling": "STANDARD_HANDLING", "having": nil, "sample": nil, "qualify": nil,
	}
	return sqlast.Deserialize(ctx, conn, p.doc, node)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// aggregateIn names what of v cannot be split into partials: an aggregate
// call, a window function or a subquery ("" if none).
func aggregateIn(v any, aggs map[string]bool) string {
	switch {
	case sqlast.Has(v, "WINDOW"):
		return "a window function"
	case sqlast.Has(v, "SUBQUERY"):
		return "a subquery"
	}
	return sqlast.FindAggregate(v, aggs)
}
