package functions

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// predicate is one condition of a where list: column op value.
type predicate struct {
	Column string `json:"column"`
	Op     string `json:"op"`
	// Value is absent (nil) for is_null and is_not_null, an array for in
	// and not_in, and a string, number or boolean otherwise.
	Value json.RawMessage `json:"value,omitempty"`

	value any // decoded Value
}

// ops maps each op to its SQL operator.
var ops = map[string]string{
	"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
	"in": "IN", "not_in": "NOT IN", "is_null": "IS NULL", "is_not_null": "IS NOT NULL", "like": "LIKE",
}

const opList = "= != < <= > >= in not_in is_null is_not_null like"

// checkWhere checks where and all: a non-empty where, or all true with no
// where (an explicit request to touch every row).
func checkWhere(where []predicate, all bool) error {
	if len(where) == 0 && !all {
		return invalid("where is empty: give predicates, or pass \"all\": true to touch every row of the table")
	}
	if len(where) > 0 && all {
		return invalid("give where or \"all\": true, not both")
	}
	for i := range where {
		if err := where[i].check(i); err != nil {
			return err
		}
	}
	return nil
}

// check validates the predicate and decodes its value.
func (p *predicate) check(i int) error {
	at := fmt.Sprintf("where[%d]", i)
	if err := checkColumn(at+".column", p.Column); err != nil {
		return err
	}
	if _, ok := ops[p.Op]; !ok {
		return invalid("%s.op %s is not an op: use one of %s", at, model.Quote(p.Op), opList)
	}
	if p.Op == "is_null" || p.Op == "is_not_null" {
		if p.Value != nil {
			return invalid("%s: op %s takes no value: leave value out", at, p.Op)
		}
		return nil
	}
	if p.Value == nil {
		return invalid("%s: op %s needs a value", at, p.Op)
	}
	v, err := decodeValue(p.Value)
	if err != nil {
		return invalid("%s.value: %v", at, model.Shorten(err))
	}
	switch p.Op {
	case "in", "not_in":
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return invalid("%s: op %s needs a non-empty array of values, not %s", at, p.Op, jsonKind(v))
		}
		for j, e := range list {
			if !scalar(e) {
				return invalid("%s.value[%d] is %s: in and not_in take strings, numbers and booleans", at, j, jsonKind(e))
			}
		}
	case "like":
		if _, ok := v.(string); !ok {
			return invalid("%s: op like needs a string pattern (%% and _ are wildcards), not %s", at, jsonKind(v))
		}
	default:
		if v == nil {
			return invalid("%s: op %s with null never matches: use op is_null or is_not_null", at, p.Op)
		}
		if !scalar(v) {
			return invalid("%s: op %s needs a string, number or boolean, not %s", at, p.Op, jsonKind(v))
		}
	}
	p.value = v
	return nil
}

// scalar reports whether v is a string, number or boolean.
func scalar(v any) bool {
	switch v.(type) {
	case string, json.Number, bool:
		return true
	}
	return false
}

// whereSQL renders where, resolved against t's columns, as a SQL condition
// with bound parameters, and returns the parameters. An empty where
// renders as "".
func whereSQL(t table, where []predicate) (string, []any, error) {
	if len(where) == 0 {
		return "", nil, nil
	}
	names := make([]string, len(where))
	for i, p := range where {
		names[i] = p.Column
	}
	var parts []string
	var args []any
	for i, p := range where {
		// Two predicates may name one column (a range), so resolve one by one.
		cols, err := t.resolve(fmt.Sprintf("where[%d].column", i), names[i:i+1])
		if err != nil {
			return "", nil, err
		}
		col := duck.Ident(cols[0])
		op := ops[p.Op]
		switch p.Op {
		case "is_null", "is_not_null":
			parts = append(parts, col+" "+op)
		case "in", "not_in":
			list := p.value.([]any)
			ph := make([]string, len(list))
			for j, e := range list {
				var v any
				ph[j], v = predicateParam(e)
				args = append(args, v)
			}
			parts = append(parts, col+" "+op+" ("+strings.Join(ph, ", ")+")")
		default:
			ph, v := predicateParam(p.value)
			parts = append(parts, col+" "+op+" "+ph)
			args = append(args, v)
		}
	}
	return " WHERE " + strings.Join(parts, " AND "), args, nil
}
