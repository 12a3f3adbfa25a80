// Package sqlast reads and rewrites SQL with DuckDB's own parser: a
// statement's abstract syntax tree as json_serialize_sql gives it (JSON
// objects with "class", "type", "function_name", "children", …), changed
// as a tree of maps and turned back into SQL by json_deserialize_sql. The
// derived tables' incremental maintenance (package functions) and the
// reader's fan-out over a group (package reader) split aggregates into
// partials this way; nothing here matches SQL text.
package sqlast

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// ErrNotOneStatement is the error of Parse for a text that is not exactly
// one statement.
var ErrNotOneStatement = errors.New("not exactly one statement")

// Querier runs the parser's functions: a *sql.DB or *sql.Conn of DuckDB.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Parse parses query on q and returns the serialized document and its one
// statement's node. Numbers stay exact (json.Number), so that a changed
// tree turns back into the same constants. A parse error is DuckDB's
// message; more or fewer than one statement is ErrNotOneStatement.
func Parse(ctx context.Context, q Querier, query string) (doc, node map[string]any, err error) {
	var text string
	if err := q.QueryRowContext(ctx, "SELECT CAST(json_serialize_sql(CAST(? AS VARCHAR)) AS VARCHAR)", query).Scan(&text); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	if failed, _ := doc["error"].(bool); failed {
		msg, _ := doc["error_message"].(string)
		return nil, nil, errors.New(msg)
	}
	stmts, _ := doc["statements"].([]any)
	if len(stmts) != 1 {
		return nil, nil, fmt.Errorf("%w: %d statements", ErrNotOneStatement, len(stmts))
	}
	st, _ := stmts[0].(map[string]any)
	node, _ = st["node"].(map[string]any)
	if node == nil {
		return nil, nil, ErrNotOneStatement
	}
	return doc, node, nil
}

// Deserialize turns node, the statement of doc (from Parse) as changed,
// back into SQL on q. doc is not changed.
func Deserialize(ctx context.Context, q Querier, doc, node map[string]any) (string, error) {
	d := Copy(doc).(map[string]any)
	d["statements"].([]any)[0].(map[string]any)["node"] = node
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return "", err
	}
	var out string
	if err := q.QueryRowContext(ctx, "SELECT json_deserialize_sql(CAST(? AS JSON))", buf.String()).Scan(&out); err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return "", fmt.Errorf("write the rewritten query: %s", msg)
	}
	return out, nil
}

// Copy is a deep copy of a tree of maps and slices.
func Copy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(t))
		for k, e := range t {
			c[k] = Copy(e)
		}
		return c
	case []any:
		c := make([]any, len(t))
		for i, e := range t {
			c[i] = Copy(e)
		}
		return c
	}
	return v
}

// Same reports whether two expressions are the same but for their aliases
// and query locations.
func Same(a, b any) bool { return canonical(a) == canonical(b) }

func canonical(v any) string {
	b, _ := json.Marshal(strip(v))
	return string(b)
}

func strip(v any) any {
	switch t := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(t))
		for k, e := range t {
			if k != "alias" && k != "query_location" {
				c[k] = strip(e)
			}
		}
		return c
	case []any:
		c := make([]any, len(t))
		for i, e := range t {
			c[i] = strip(e)
		}
		return c
	}
	return v
}

// Name is a node's function name in lower case ("" if none).
func Name(n map[string]any) string {
	s, _ := n["function_name"].(string)
	return strings.ToLower(s)
}

// Aggregates are the names (lower case) of DuckDB's aggregate functions,
// count_star (count(*)) included, read from q's catalog on the first call
// and kept: they are the linked DuckDB's (no extension can be installed
// here), so every later call returns the same set without a query.
func Aggregates(ctx context.Context, q Querier) (map[string]bool, error) {
	aggregates.Lock()
	defer aggregates.Unlock()
	if aggregates.names != nil {
		return aggregates.names, nil
	}
	rows, err := q.QueryContext(ctx, "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE function_type = 'aggregate'")
	if err != nil {
		return nil, fmt.Errorf("list aggregate functions: %w", err)
	}
	defer rows.Close()
	names := map[string]bool{"count_star": true}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names[n] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	aggregates.names = names
	return names, nil
}

// aggregates caches Aggregates.
var aggregates struct {
	sync.Mutex
	names map[string]bool
}

// FindAggregate is the name of the first aggregate function called in
// the tree v (aggs: Aggregates), or "".
func FindAggregate(v any, aggs map[string]bool) string {
	switch t := v.(type) {
	case map[string]any:
		if t["class"] == "FUNCTION" && aggs[Name(t)] {
			return Name(t)
		}
		for _, e := range t {
			if n := FindAggregate(e, aggs); n != "" {
				return n
			}
		}
	case []any:
		for _, e := range t {
			if n := FindAggregate(e, aggs); n != "" {
				return n
			}
		}
	}
	return ""
}

// Has reports whether the tree v holds a node of type or class t.
func Has(v any, t string) bool {
	switch v := v.(type) {
	case []any:
		return slices.ContainsFunc(v, func(e any) bool { return Has(e, t) })
	case map[string]any:
		if v["type"] == t || v["class"] == t {
			return true
		}
		for _, e := range v {
			if Has(e, t) {
				return true
			}
		}
	}
	return false
}

// Decomposable maps the aggregates whose partial results merge per group
// (by their name in the tree) to their kind: count (count(*), count(x)),
// sum, min, max and avg (a sum and a count). A partial count or sum merges
// by sum, min by min, max by max; avg is the summed sum over the summed
// count.
var Decomposable = map[string]string{"count_star": "count", "count": "count", "sum": "sum", "min": "min", "max": "max", "avg": "avg", "mean": "avg"}
