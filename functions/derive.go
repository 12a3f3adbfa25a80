package functions

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/sqlast"
)

// A derived table is a table of schema main that the db-manager keeps
// current: `derive` declares it with a query (the rules of refresh), and
// after every transaction that changed one of the tables the query reads
// (its inputs), Derived.Maintain brings it up to date in the same
// transaction, in dependency order. Its definition lives in the model's
// DuckDB file, in _teatree.derived (DerivedSchema); the incremental state
// of a derived table maintained incrementally in _teatree."derived:<table>".
//
// Rule (docs/decisions.md, "Derived tables"): a derived table is
// maintained incrementally when its query is one SELECT (no WITH, no
// set operation, no ORDER BY, LIMIT, DISTINCT, HAVING, QUALIFY,
// SAMPLE, subqueries) over one table of schema main (no join), with
// GROUP BY ALL or a plain GROUP BY (no GROUPING SETS, ROLLUP, CUBE) of
// exactly its non-aggregate select items, and every other select item is
// one of count(*), count(x), sum(x), min(x), max(x) or avg(x) (numeric
// x) without DISTINCT, FILTER or ORDER BY; and, at refresh, its inputs
// only received appends in the transaction. Everything else recomputes.

// Refresh paths, as _teatree.derived.refresh_path and teactl derived show
// them.
const (
	// PathIncremental merged the appended rows into the state per group.
	PathIncremental = "incremental"
	// PathFull recomputed the table from its inputs.
	PathFull = "full"
	// PathRebuild re-created the table from its query (declaration, or an
	// input re-created).
	PathRebuild = "rebuild"
)

// Rules, as _teatree.derived.rule holds them.
const (
	RuleIncremental = "incremental"
	RuleFull        = "full"
)

// DerivedSchema creates the table of derived-table definitions. The
// db-manager runs it at start; derive and drop_table run it too (in their
// transaction) so that a file without it works.
const DerivedSchema = `CREATE SCHEMA IF NOT EXISTS _teatree;
CREATE TABLE IF NOT EXISTS _teatree.derived (
	table_name   VARCHAR PRIMARY KEY,
	query        VARCHAR NOT NULL,
	inputs       VARCHAR NOT NULL,
	rule         VARCHAR NOT NULL,
	reason       VARCHAR,
	plan         VARCHAR,
	declared     TIMESTAMPTZ NOT NULL,
	refreshed    TIMESTAMPTZ NOT NULL,
	refresh_path VARCHAR NOT NULL,
	refresh_ms   DOUBLE,
	rows         BIGINT
);`

type deriveArgs struct {
	Table string `json:"table"`
	Query string `json:"query"`
	// Reads is refused (checkDerive): a derived table reads only its
	// own model.
	Reads map[string]ReadRef `json:"reads,omitempty"`

	// Filled by Check.
	inputs []string // lower-case names of the tables the query reads, sorted
	plan   *incPlan // nil: the table is recomputed
	reason string   // why plan is nil
}

// deriveSpec is derive: declare a derived table kept current.
var deriveSpec = spec[deriveArgs]{
	Name:    "derive",
	Summary: "declare a derived table from one SELECT over the model's tables, kept current in every version (incrementally where sound)",
	Description: "Declares main.<table> as a derived table and computes it (CREATE OR REPLACE TABLE … AS <query>): after every batch that changes a table the query reads, the db-manager brings <table> up to date in the same transaction, before the version is cut, in dependency order (derived tables may read derived tables; a cycle is refused). The query follows refresh's rules (one SELECT over tables of schema main, checked with DuckDB's own parser). " +
		"It is maintained incrementally (the appended rows merged per group) when it is one SELECT over one table with GROUP BY ALL or a GROUP BY of its non-aggregate items and only count(*), count(x), sum(x), min(x), max(x), avg(x) aggregates (no DISTINCT, FILTER, ORDER BY, LIMIT, HAVING, WITH, joins or subqueries) and its input only received appends; otherwise it is recomputed. " +
		"Deriving an existing derived table replaces its query; drop_table removes the table and its definition; other functions may not change a derived table. teactl derived MODEL lists them.",
	Schema: tableQuerySchema,
	Examples: []string{
		`{"table":"monthly_sales","query":"SELECT date_trunc('month', day) AS month, store, count(*) AS n, sum(amount) AS amount, avg(amount) AS avg_amount FROM sales GROUP BY ALL"}`,
		`{"table":"top_customers","query":"WITH c AS (SELECT customer, count(*) AS n FROM orders GROUP BY customer) FROM c ORDER BY n DESC LIMIT 100"}`,
	},
	Check: checkDerive,
	Apply: applyDerive,
}

// checkDerive checks the query as refresh does, finds the tables it reads
// and decides the rule.
func checkDerive(a *deriveArgs) error {
	if len(a.Reads) > 0 {
		return invalid("a derived table cannot read other models: it is kept current from this model's own tables in every version, and another model's versions change on their own; use refresh with reads, and submit it again for a newer version")
	}
	if err := checkRefresh(&refreshArgs{Table: a.Table, Query: a.Query}); err != nil {
		return err
	}
	doc, node, err := parseExact(a.Query)
	if err != nil {
		return err
	}
	a.inputs = tablesRead(node)
	if len(a.inputs) == 0 {
		return invalid("query reads no table: a derived table is computed from tables of schema main (use create_table and append for constant rows)")
	}
	if slices.Contains(a.inputs, strings.ToLower(a.Table)) {
		return invalid("query reads %s itself: a derived table cannot read itself (a cycle)", model.Quote(a.Table))
	}
	a.plan, a.reason, err = planIncremental(doc, node)
	return err
}

// parseExact parses query like parseSelect but keeps numbers exact
// (json.Number), so that the AST can be changed and turned back into SQL
// (json_deserialize_sql). It returns the whole serialized document and
// its one statement's node.
func parseExact(query string) (doc, node map[string]any, err error) {
	db, err := parserDB()
	if err != nil {
		return nil, nil, err
	}
	doc, node, err = sqlast.Parse(context.Background(), db, query)
	switch {
	case errors.Is(err, sqlast.ErrNotOneStatement):
		return nil, nil, invalid("query must be exactly one SELECT statement")
	case err != nil:
		return nil, nil, invalid("query: %s", firstLine(err))
	}
	return doc, node, nil
}

// tablesRead returns the lower-case names of the base tables the AST
// reads, anywhere (FROM, joins, subqueries, CTE bodies), without the
// names that refer to a common table expression in scope. Sorted.
func tablesRead(node any) []string {
	found := map[string]bool{}
	var walk func(v any, scope map[string]bool)
	walk = func(v any, scope map[string]bool) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				walk(e, scope)
			}
		case map[string]any:
			inner := scope
			if cm, ok := v["cte_map"].(map[string]any); ok {
				entries, _ := cm["map"].([]any)
				if len(entries) > 0 {
					inner = withNames(scope)
					for _, e := range entries {
						e, _ := e.(map[string]any)
						name, _ := e["key"].(string)
						// A CTE body sees the CTEs before it (and, in a
						// recursive one, itself): conservative, a name
						// not yet in scope counts as a table.
						walk(e["value"], withNames(inner, name))
						inner[strings.ToLower(name)] = true
					}
				}
			}
			if name, ok := v["ctename"].(string); ok && name != "" {
				inner = withNames(inner, name)
			}
			if t, _ := v["type"].(string); t == "BASE_TABLE" {
				name, _ := v["table_name"].(string)
				schema, _ := v["schema_name"].(string)
				if lower := strings.ToLower(name); schema != "" || !inner[lower] {
					found[lower] = true
				}
			}
			for k, e := range v {
				if k != "cte_map" {
					walk(e, inner)
				}
			}
		}
	}
	walk(node, map[string]bool{})
	out := make([]string, 0, len(found))
	for n := range found {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// withNames copies scope and adds names (lower-cased).
func withNames(scope map[string]bool, names ...string) map[string]bool {
	m := make(map[string]bool, len(scope)+len(names))
	for k := range scope {
		m[k] = true
	}
	for _, n := range names {
		m[strings.ToLower(n)] = true
	}
	return m
}

// incPlan is how a derived table is maintained incrementally. Its state
// table _teatree."derived:<table>" has columns c0…c<Width-1>: the select
// items in order (a key's value, an aggregate's partial: count, sum, min,
// max, or for avg the sum), then one count per avg.
type incPlan struct {
	Input string `json:"input"` // lower-case
	// Kinds[i] is "key", "count", "sum", "min", "max" or "avg" for state
	// column i < len(Kinds); avg's count is column Counts[i].
	Kinds  []string    `json:"kinds"`
	Counts map[int]int `json:"counts,omitempty"`
	Width  int         `json:"width"`
	// StateSQL computes the state over the whole input; DeltaSQL over the
	// rows with rowid > $1.
	StateSQL string `json:"state_sql"`
	DeltaSQL string `json:"delta_sql"`
}

// deserialize turns node, the statement of doc changed, back into SQL on
// the private parser.
func deserialize(doc, node map[string]any) (string, error) {
	db, err := parserDB()
	if err != nil {
		return "", err
	}
	return sqlast.Deserialize(context.Background(), db, doc, node)
}

// aggregateNames are DuckDB's aggregate function names (lower case), from
// the private parser's catalog (sqlast.Aggregates keeps them).
func aggregateNames() (map[string]bool, error) {
	db, err := parserDB()
	if err != nil {
		return nil, err
	}
	return sqlast.Aggregates(context.Background(), db)
}

// planIncremental decides whether the query (doc, node) is maintained
// incrementally and returns its plan, or nil and the reason.
func planIncremental(doc, node map[string]any) (*incPlan, string, error) {
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	full := func(why string) (*incPlan, string, error) { return nil, why, nil }
	if str(node, "type") != "SELECT_NODE" {
		return full("not a single SELECT (WITH or a set operation)")
	}
	if cm, _ := node["cte_map"].(map[string]any); cm != nil {
		if e, _ := cm["map"].([]any); len(e) > 0 {
			return full("has a WITH clause")
		}
	}
	if m, _ := node["modifiers"].([]any); len(m) > 0 {
		return full("has ORDER BY, LIMIT or DISTINCT")
	}
	for _, k := range []string{"having", "qualify", "sample"} {
		if node[k] != nil {
			return full("has " + strings.ToUpper(k))
		}
	}
	from, _ := node["from_table"].(map[string]any)
	if str(from, "type") != "BASE_TABLE" || from["sample"] != nil || from["at_clause"] != nil {
		return full("does not read exactly one table (a join, subquery or table sample)")
	}
	if cols, _ := from["column_name_alias"].([]any); len(cols) > 0 {
		return full("renames its input's columns")
	}
	if sqlast.Has(node["where_clause"], "SUBQUERY") || sqlast.Has(node["select_list"], "SUBQUERY") || sqlast.Has(node["group_expressions"], "SUBQUERY") {
		return full("has a subquery")
	}
	aggs, err := aggregateNames()
	if err != nil {
		return nil, "", err
	}
	items, _ := node["select_list"].([]any)
	p := &incPlan{Input: strings.ToLower(str(from, "table_name")), Counts: map[int]int{}}
	var keys []int
	for i, e := range items {
		e, _ := e.(map[string]any)
		name := strings.ToLower(str(e, "function_name"))
		if str(e, "class") == "FUNCTION" && aggs[name] {
			kind, ok := sqlast.Decomposable[name]
			if !ok {
				return full(name + "() is not a decomposable aggregate")
			}
			if e["distinct"] == true || e["filter"] != nil || str(e, "schema") != "" || e["export_state"] == true {
				return full(name + "() has DISTINCT, FILTER or a schema")
			}
			if ob, _ := e["order_bys"].(map[string]any); ob != nil {
				if o, _ := ob["orders"].([]any); len(o) > 0 {
					return full(name + "() has ORDER BY")
				}
			}
			children, _ := e["children"].([]any)
			if (name == "count_star") != (len(children) == 0) || len(children) > 1 {
				return full(name + "() does not take one argument")
			}
			if sqlast.FindAggregate(children, aggs) != "" || sqlast.Has(children, "WINDOW") {
				return full("an aggregate's argument holds an aggregate or window function")
			}
			p.Kinds = append(p.Kinds, kind)
			continue
		}
		if str(e, "class") == "STAR" || sqlast.FindAggregate(e, aggs) != "" || sqlast.Has(e, "WINDOW") {
			return full(fmt.Sprintf("select item %d is neither a group key nor one decomposable aggregate", i+1))
		}
		p.Kinds = append(p.Kinds, "key")
		keys = append(keys, i)
	}
	if len(keys) == 0 {
		return full("has no GROUP BY key")
	}
	groups, _ := node["group_expressions"].([]any)
	switch str(node, "aggregate_handling") {
	case "FORCE_AGGREGATES": // GROUP BY ALL: the keys are the non-aggregates
		if len(groups) > 0 {
			return full("has GROUP BY ALL with expressions")
		}
	case "STANDARD_HANDLING":
		if sets, _ := node["group_sets"].([]any); len(sets) != 1 {
			return full("has GROUPING SETS, ROLLUP or CUBE, or no GROUP BY")
		} else if s, _ := sets[0].([]any); len(s) != len(groups) {
			return full("has GROUPING SETS, ROLLUP or CUBE")
		}
		if !groupsMatch(groups, items, keys) {
			return full("its GROUP BY is not exactly its non-aggregate select items")
		}
	default:
		return full("has no plain GROUP BY")
	}
	// The partial query: avg(x) becomes sum(x), and count(x) of each avg
	// is added at the end (positions of the keys stay).
	partial := sqlast.Copy(node).(map[string]any)
	list := partial["select_list"].([]any)
	for i, kind := range p.Kinds {
		if kind != "avg" {
			continue
		}
		e := list[i].(map[string]any)
		n := sqlast.Copy(e).(map[string]any)
		e["function_name"] = "sum"
		n["function_name"] = "count"
		n["alias"] = fmt.Sprintf("__teatree_count_%d", i)
		p.Counts[i] = len(list)
		list = append(list, n)
	}
	partial["select_list"] = list
	p.Width = len(list)
	if p.StateSQL, err = deserialize(doc, partial); err != nil {
		return nil, "", err
	}
	alias := str(from, "alias")
	if alias == "" {
		alias = str(from, "table_name")
	}
	_, sub, err := parseExact("SELECT * FROM (SELECT * FROM " + qualified(str(from, "table_name")) + " WHERE rowid > $1) AS " + duck.Ident(alias))
	if err != nil {
		return nil, "", err
	}
	partial["from_table"] = sub["from_table"]
	if p.DeltaSQL, err = deserialize(doc, partial); err != nil {
		return nil, "", err
	}
	return p, "", nil
}

// groupsMatch reports whether the GROUP BY expressions are exactly the
// key select items: each a position (GROUP BY 1), an item's alias or the
// item's expression, all keys covered once.
func groupsMatch(groups, items []any, keys []int) bool {
	if len(groups) != len(keys) {
		return false
	}
	used := map[int]bool{}
	for _, g := range groups {
		g, _ := g.(map[string]any)
		at := -1
		if g["class"] == "CONSTANT" {
			if v, _ := g["value"].(map[string]any); v != nil {
				if n, ok := v["value"].(json.Number); ok {
					if k, err := n.Int64(); err == nil && k >= 1 && int(k) <= len(items) {
						at = int(k) - 1
					}
				}
			}
		} else {
			for _, k := range keys {
				item, _ := items[k].(map[string]any)
				if names, _ := g["column_names"].([]any); g["class"] == "COLUMN_REF" && len(names) == 1 {
					if n, _ := names[0].(string); n != "" && strings.EqualFold(n, fmt.Sprint(item["alias"])) {
						at = k
						break
					}
				}
				if sqlast.Same(g, item) {
					at = k
					break
				}
			}
		}
		if at < 0 || used[at] || !slices.Contains(keys, at) {
			return false
		}
		used[at] = true
	}
	return true
}

// stateTable is the quoted name of the state table of derived table t.
func stateTable(t string) string { return "_teatree." + duck.Ident("derived:"+strings.ToLower(t)) }

// applyDerive stores the definition and computes the table.
func applyDerive(ctx context.Context, env Env, a *deriveArgs) (Result, error) {
	start := time.Now()
	if _, err := env.Conn.ExecContext(ctx, DerivedSchema); err != nil {
		return Result{}, dbError("create _teatree.derived", err)
	}
	d, err := LoadDerived(ctx, env.Conn)
	if err != nil {
		return Result{}, err
	}
	inputs := make([]string, 0, len(a.inputs))
	for _, in := range a.inputs {
		t, ok, err := lookupTable(ctx, env.Conn, in)
		if err != nil {
			return Result{}, dbError("look up table "+in, err)
		}
		if !ok {
			return Result{}, invalid("query reads %s, which is not a table of schema main (create it first)", model.Quote(in))
		}
		inputs = append(inputs, t.Name)
	}
	if path := d.cycle(strings.ToLower(a.Table), a.inputs); path != nil {
		return Result{}, invalid("derived tables would form a cycle: %s", strings.Join(path, " → "))
	}
	res, err := applyRefresh(ctx, env, &refreshArgs{Table: a.Table, Query: a.Query})
	if err != nil {
		return Result{}, err
	}
	name := res.Tables[0]
	plan, reason := a.plan, a.reason
	if plan != nil {
		if why, err := avgNumeric(ctx, env.Conn, name, plan); err != nil {
			return Result{}, dbError("describe "+name, err)
		} else if why != "" {
			plan, reason = nil, why
		}
	}
	if plan != nil {
		// The rewritten query must bind here (a column spelled main.t.c,
		// say, does not once FROM is a subquery): else recompute.
		var n int64
		if err := env.Conn.QueryRowContext(ctx, "SELECT count(*) FROM (\n"+plan.DeltaSQL+"\n)", int64(math.MaxInt64)).Scan(&n); err != nil {
			plan, reason = nil, "its incremental form does not bind: "+firstLine(err)
		}
	}
	if _, err := env.Conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+stateTable(name)); err != nil {
		return Result{}, dbError("drop the state of "+name, err)
	}
	if plan != nil {
		if err := buildState(ctx, env.Conn, name, plan); err != nil {
			return Result{}, err
		}
	}
	rule, planJSON := RuleFull, []byte(nil)
	if plan != nil {
		rule = RuleIncremental
		if planJSON, err = json.Marshal(plan); err != nil {
			return Result{}, err
		}
	}
	inJSON, _ := json.Marshal(inputs)
	if _, err := env.Conn.ExecContext(ctx, `DELETE FROM _teatree.derived WHERE lower(table_name) = lower(?)`, name); err != nil {
		return Result{}, dbError("record derived table "+name, err)
	}
	if _, err := env.Conn.ExecContext(ctx, `INSERT INTO _teatree.derived VALUES (?, ?, ?, ?, ?, ?, now(), now(), ?, ?, ?)`,
		name, a.Query, string(inJSON), rule, nullString(reason), nullString(string(planJSON)), PathRebuild, ms(time.Since(start)), res.Rows); err != nil {
		return Result{}, dbError("record derived table "+name, err)
	}
	return res, nil
}

// avgNumeric checks that every avg of plan made a DOUBLE column (an avg
// over numbers); otherwise the table is recomputed, and the reason says so.
func avgNumeric(ctx context.Context, conn *sql.Conn, name string, p *incPlan) (string, error) {
	t, _, err := lookupTable(ctx, conn, name)
	if err != nil {
		return "", err
	}
	for i, k := range p.Kinds {
		if k == "avg" && (i >= len(t.Columns) || t.Columns[i].Type != "DOUBLE") {
			return "avg() over a column that is not a number", nil
		}
	}
	return "", nil
}

// buildState (re)computes the state table of name from its whole input.
func buildState(ctx context.Context, conn *sql.Conn, name string, p *incPlan) error {
	q := "CREATE OR REPLACE TABLE " + stateTable(name) + " AS SELECT * FROM (\n" + p.StateSQL + "\n) AS d(" + stateCols(p.Width, "") + ")"
	if _, err := conn.ExecContext(ctx, q); err != nil {
		return dbError("compute the state of "+name, err)
	}
	return nil
}

// stateCols lists c0…c<n-1>, each prefixed.
func stateCols(n int, prefix string) string {
	cols := make([]string, n)
	for i := range cols {
		cols[i] = fmt.Sprintf("%sc%d", prefix, i)
	}
	return strings.Join(cols, ", ")
}

// fromState replaces the rows of name with the final values of its state.
func fromState(ctx context.Context, conn *sql.Conn, name string, p *incPlan) error {
	finals := make([]string, len(p.Kinds))
	for i, k := range p.Kinds {
		if k == "avg" {
			finals[i] = fmt.Sprintf("CASE WHEN s.c%[2]d = 0 THEN NULL ELSE CAST(s.c%[1]d AS DOUBLE) / s.c%[2]d END", i, p.Counts[i])
		} else {
			finals[i] = fmt.Sprintf("s.c%d", i)
		}
	}
	if _, err := conn.ExecContext(ctx, "DELETE FROM "+qualified(name)); err != nil {
		return dbError("empty "+name, err)
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO "+qualified(name)+" SELECT "+strings.Join(finals, ", ")+" FROM "+stateTable(name)+" AS s"); err != nil {
		return dbError("write "+name+" from its state", err)
	}
	return nil
}

// mergeDelta merges the rows of the input with rowid > mark into the
// state of name, per group.
func mergeDelta(ctx context.Context, conn *sql.Conn, name string, p *incPlan, mark int64) error {
	var on, set, ins []string
	for i, k := range p.Kinds {
		c := fmt.Sprintf("c%d", i)
		switch k {
		case "key":
			on = append(on, fmt.Sprintf("s.%s IS NOT DISTINCT FROM d.%s", c, c))
		case "count":
			set = append(set, fmt.Sprintf("%s = s.%s + d.%s", c, c, c))
		case "sum", "avg":
			set = append(set, fmt.Sprintf("%s = coalesce(s.%s + d.%s, s.%s, d.%s)", c, c, c, c, c))
		case "min":
			set = append(set, fmt.Sprintf("%s = coalesce(least(s.%s, d.%s), s.%s, d.%s)", c, c, c, c, c))
		case "max":
			set = append(set, fmt.Sprintf("%s = coalesce(greatest(s.%s, d.%s), s.%s, d.%s)", c, c, c, c, c))
		}
	}
	for i := len(p.Kinds); i < p.Width; i++ { // the counts of avg
		set = append(set, fmt.Sprintf("c%d = s.c%d + d.c%d", i, i, i))
	}
	ins = append(ins, stateCols(p.Width, "d."))
	q := "MERGE INTO " + stateTable(name) + " AS s USING (SELECT * FROM (\n" + p.DeltaSQL + "\n) AS d(" + stateCols(p.Width, "") + ")) AS d ON (" +
		strings.Join(on, " AND ") + ") WHEN MATCHED THEN UPDATE SET " + strings.Join(set, ", ") +
		" WHEN NOT MATCHED THEN INSERT VALUES (" + strings.Join(ins, ", ") + ")"
	if _, err := conn.ExecContext(ctx, q, mark); err != nil {
		return dbError("merge the appended rows into "+name, err)
	}
	return nil
}

// dropDerived removes the definition and state of table t, if it is
// derived (drop_table).
func dropDerived(ctx context.Context, conn *sql.Conn, t string) error {
	if _, err := conn.ExecContext(ctx, DerivedSchema); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "DELETE FROM _teatree.derived WHERE lower(table_name) = lower(?)", t); err != nil {
		return err
	}
	_, err := conn.ExecContext(ctx, "DROP TABLE IF EXISTS "+stateTable(t))
	return err
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// derivedDef is one row of _teatree.derived.
type derivedDef struct {
	name   string   // as the catalog spells it
	inputs []string // lower case
	plan   *incPlan
}

// Derived holds a model's derived tables for one transaction: their
// definitions in dependency order and, for those maintained
// incrementally, the last rowid of each input when the transaction began.
// The zero Derived has none (Reload reads them).
type Derived struct {
	defs  map[string]*derivedDef // by lower-case name
	order []*derivedDef          // inputs first
	marks map[string]int64       // lower-case input → max rowid at LoadDerived
}

// LoadDerived reads the definitions (none when _teatree.derived does not
// exist) and marks the inputs of those maintained incrementally. Call it
// right after BEGIN, before anything changes.
func LoadDerived(ctx context.Context, conn *sql.Conn) (*Derived, error) {
	d := &Derived{marks: map[string]int64{}}
	if err := d.Reload(ctx, conn); err != nil {
		return nil, err
	}
	for _, def := range d.order {
		if def.plan == nil {
			continue
		}
		in := def.plan.Input
		if _, ok := d.marks[in]; ok {
			continue
		}
		var mark int64
		if err := conn.QueryRowContext(ctx, "SELECT coalesce(max(rowid), -1) FROM "+qualified(in)).Scan(&mark); err != nil {
			continue // missing: no mark, so the table is recomputed
		}
		d.marks[in] = mark
	}
	return d, nil
}

// Reload reads the definitions again (after a derive or drop_table in the
// transaction), keeping the marks.
func (d *Derived) Reload(ctx context.Context, conn *sql.Conn) error {
	d.defs, d.order = map[string]*derivedDef{}, nil
	var exists bool
	if err := conn.QueryRowContext(ctx, "SELECT count(*) > 0 FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = '_teatree' AND table_name = 'derived'").Scan(&exists); err != nil {
		return fmt.Errorf("derived tables: %w", err)
	}
	if !exists {
		return nil
	}
	rows, err := conn.QueryContext(ctx, "SELECT table_name, inputs, plan FROM _teatree.derived ORDER BY table_name")
	if err != nil {
		return fmt.Errorf("derived tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, inputs string
		var plan sql.NullString
		if err := rows.Scan(&name, &inputs, &plan); err != nil {
			return fmt.Errorf("derived tables: %w", err)
		}
		def := &derivedDef{name: name}
		var in []string
		if err := json.Unmarshal([]byte(inputs), &in); err != nil {
			return fmt.Errorf("derived table %s: inputs: %w", name, err)
		}
		for _, i := range in {
			def.inputs = append(def.inputs, strings.ToLower(i))
		}
		if plan.Valid {
			def.plan = new(incPlan)
			if err := json.Unmarshal([]byte(plan.String), def.plan); err != nil {
				return fmt.Errorf("derived table %s: plan: %w", name, err)
			}
		}
		d.defs[strings.ToLower(name)] = def
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("derived tables: %w", err)
	}
	d.order = d.sorted()
	return nil
}

// sorted orders the definitions so that every derived table comes after
// the derived tables it reads (Kahn's algorithm; ties by name).
func (d *Derived) sorted() []*derivedDef {
	names := make([]string, 0, len(d.defs))
	for n := range d.defs {
		names = append(names, n)
	}
	slices.Sort(names)
	done := map[string]bool{}
	var out []*derivedDef
	for len(out) < len(names) {
		progress := false
		for _, n := range names {
			if done[n] {
				continue
			}
			ready := true
			for _, in := range d.defs[n].inputs {
				if _, derived := d.defs[in]; derived && !done[in] && in != n {
					ready = false
				}
			}
			if ready {
				done[n], progress = true, true
				out = append(out, d.defs[n])
			}
		}
		if !progress { // a cycle (refused at declaration): keep going
			for _, n := range names {
				if !done[n] {
					done[n] = true
					out = append(out, d.defs[n])
				}
			}
		}
	}
	return out
}

// cycle returns the path of a cycle that declaring table (lower case)
// over inputs would close, or nil.
func (d *Derived) cycle(table string, inputs []string) []string {
	var path []string
	seen := map[string]bool{}
	var reaches func(n string) bool
	reaches = func(n string) bool {
		if n == table {
			path = append(path, n)
			return true
		}
		def, ok := d.defs[n]
		if !ok || seen[n] {
			return false
		}
		seen[n] = true
		for _, in := range def.inputs {
			if reaches(in) {
				path = append(path, n)
				return true
			}
		}
		return false
	}
	for _, in := range inputs {
		if reaches(in) {
			path = append(path, table)
			slices.Reverse(path)
			return path
		}
	}
	return nil
}

// Tables returns the number of derived tables.
func (d *Derived) Tables() int { return len(d.defs) }

// CheckWrite refuses a change of a derived table by a function other than
// derive, drop_table and sql: it would be overwritten (or corrupt the
// incremental state). The error wraps model.ErrInvalid.
func (d *Derived) CheckWrite(function string, res Result) error {
	switch function {
	case "derive", "drop_table", "sql":
		return nil
	}
	for _, t := range res.Tables {
		if def, ok := d.defs[strings.ToLower(t)]; ok {
			return fmt.Errorf("%s: %w", function, invalid("table %s is derived (kept current from its query by derive): change its inputs instead, derive it anew, or drop it", model.Quote(def.name)))
		}
	}
	return nil
}

// Maintain brings every derived table up to date whose inputs changes
// changed, in dependency order, inside the caller's transaction:
// incrementally (PathIncremental) when incremental is true, the table's
// rule allows it and its inputs only received appends since LoadDerived;
// otherwise by recomputing (PathFull), or by re-creating it (PathRebuild)
// when an input was re-created or the table itself was (re)declared in
// the transaction. It returns what it changed, for the bookkeeping.
// Errors name the derived table; those caused by the data or the
// definition (an input dropped, a query that no longer binds) wrap
// model.ErrInvalid.
func (d *Derived) Maintain(ctx context.Context, conn *sql.Conn, changes []Result, incremental bool) ([]Result, error) {
	if len(d.order) == 0 {
		return nil, nil
	}
	type change struct{ modified, replaced bool }
	changed := map[string]*change{}
	all := false
	for _, r := range changes {
		all = all || r.AllTables
		for _, t := range r.Tables {
			k := strings.ToLower(t)
			c := changed[k]
			if c == nil {
				c = &change{}
				changed[k] = c
			}
			c.modified = c.modified || !r.Appended
			c.replaced = c.replaced || r.Replaced
		}
	}
	var out []Result
	for _, def := range d.order {
		key := strings.ToLower(def.name)
		path := ""
		for _, in := range def.inputs {
			c, ok := changed[in]
			switch {
			case all, ok && c.replaced:
				path = PathRebuild
			case ok && c.modified && path == "":
				path = PathFull
			case ok && path == "":
				path = PathIncremental
			}
		}
		if path == "" {
			continue
		}
		if self, ok := changed[key]; all || ok && self.replaced {
			path = PathRebuild // (re)declared in this transaction
		}
		if path == PathIncremental {
			if _, marked := d.marks[inputOf(def)]; !incremental || def.plan == nil || !marked {
				path = PathFull
			}
		}
		res, err := d.refresh(ctx, conn, def, path)
		if err != nil {
			return nil, fmt.Errorf("derived table %s: %w", def.name, err)
		}
		out = append(out, res)
		changed[key] = &change{modified: true, replaced: res.Replaced}
	}
	return out, nil
}

func inputOf(def *derivedDef) string {
	if def.plan == nil {
		return ""
	}
	return def.plan.Input
}

// refresh brings def up to date by path.
func (d *Derived) refresh(ctx context.Context, conn *sql.Conn, def *derivedDef, path string) (Result, error) {
	start := time.Now()
	for _, in := range def.inputs {
		if _, ok, err := lookupTable(ctx, conn, in); err != nil {
			return Result{}, dbError("look up "+in, err)
		} else if !ok {
			return Result{}, invalid("its query reads %s, which no longer exists: drop %s first (drop_table), or derive it anew", model.Quote(in), model.Quote(def.name))
		}
	}
	var query string
	if err := conn.QueryRowContext(ctx, "SELECT query FROM _teatree.derived WHERE table_name = ?", def.name).Scan(&query); err != nil {
		return Result{}, fmt.Errorf("read its definition: %w", err)
	}
	var err error
	res := Result{Tables: []string{def.name}}
	switch {
	case path == PathRebuild || def.plan == nil:
		var r Result
		r, err = applyRefresh(ctx, Env{Conn: conn}, &refreshArgs{Table: def.name, Query: query})
		if err == nil && def.plan != nil {
			err = buildState(ctx, conn, def.name, def.plan)
		}
		res.Replaced = true
		res.Rows = r.Rows
	case path == PathFull:
		if err = buildState(ctx, conn, def.name, def.plan); err == nil {
			err = fromState(ctx, conn, def.name, def.plan)
		}
	default:
		if err = mergeDelta(ctx, conn, def.name, def.plan, d.marks[def.plan.Input]); err == nil {
			err = fromState(ctx, conn, def.name, def.plan)
		}
	}
	if err != nil {
		return Result{}, err
	}
	if !res.Replaced {
		if res.Rows, err = countRows(ctx, conn, def.name); err != nil {
			return Result{}, dbError("count rows of "+def.name, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "UPDATE _teatree.derived SET refreshed = now(), refresh_path = ?, refresh_ms = ?, rows = ? WHERE table_name = ?",
		path, ms(time.Since(start)), res.Rows, def.name); err != nil {
		return Result{}, fmt.Errorf("record the refresh: %w", err)
	}
	return res, nil
}
