package functions

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// update is update: set columns of the rows that match where.
type update struct{}

var _ Function = update{}

type updateArgs struct {
	Table string         `json:"table"`
	Set   map[string]any `json:"set"`
	Where []predicate    `json:"where,omitempty"`
	All   bool           `json:"all,omitempty"`
}

func (update) Name() string { return "update" }

func (update) Summary() string {
	return "set columns of the rows of a table that match structured predicates"
}

var updateSchema = makeSchema("update",
	"Sets the columns in set (column name to value; null sets NULL) of every row of main.<table> that matches all predicates in where. Values are bound as parameters. An empty where must be explicit: pass \"all\": true (and no where) to update every row.",
	`"required": ["table", "set"],
  "oneOf": [
    {"required": ["where"], "properties": {"where": {"minItems": 1}, "all": {"const": false}}},
    {"required": ["all"], "properties": {"all": {"const": true}, "where": {"maxItems": 0}}}
  ],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "set": {"type": "object", "minProperties": 1, "propertyNames": {"$ref": "#/$defs/column"}},
    "where": {"$ref": "#/$defs/where"},
    "all": {"type": "boolean", "description": "true: update every row (where must be empty)"}
  }`,
	`{"table":"t","set":{"v":"b"},"where":[{"column":"id","op":"=","value":1}]}`,
	`{"table":"t","set":{"v":null,"n":0},"where":[{"column":"v","op":"like","value":"tmp%"},{"column":"id","op":">=","value":100}]}`,
	`{"table":"t","set":{"checked":true},"all":true}`,
)

func (update) Schema() json.RawMessage { return updateSchema }

func (f update) Validate(args json.RawMessage) error {
	_, err := f.parse(args)
	return err
}

func (f update) parseAny(args json.RawMessage) (any, error) { return f.parse(args) }

func (f update) parse(args json.RawMessage) (*updateArgs, error) {
	fn := f.Name()
	var a updateArgs
	if err := decodeArgs(fn, args, &a); err != nil {
		return nil, err
	}
	if err := checkTable(fn, a.Table); err != nil {
		return nil, err
	}
	if len(a.Set) == 0 {
		return nil, invalid(fn, "set is empty: give the columns to set, e.g. {\"v\":\"b\"}")
	}
	for c := range a.Set {
		if err := checkColumn(fn, "set column", c); err != nil {
			return nil, err
		}
	}
	if err := checkWhere(fn, a.Where, a.All); err != nil {
		return nil, err
	}
	return &a, nil
}

// Apply runs UPDATE main.<table> SET … WHERE … with bound values.
func (f update) Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error) {
	fn := f.Name()
	a, err := f.parse(args)
	if err != nil {
		return Result{}, err
	}
	t, err := mustTable(ctx, env, fn, a.Table)
	if err != nil {
		return Result{}, err
	}
	keys := make([]string, 0, len(a.Set))
	for k := range a.Set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cols, err := t.resolveIdx(fn, "set column", keys)
	if err != nil {
		return Result{}, err
	}
	var set []string
	var params []any
	for i, c := range cols {
		name := t.Columns[c].Name
		v, err := t.bindValue(c, a.Set[keys[i]])
		if err != nil {
			return Result{}, invalid(fn, "set column %s (%s): %v", model.Quote(name), t.Columns[c].Type, err)
		}
		set = append(set, duck.Ident(name)+" = "+placeholder(t.Columns[c].Type))
		params = append(params, v)
	}
	where, wargs, err := whereSQL(fn, t, a.Where)
	if err != nil {
		return Result{}, err
	}
	res, err := env.Conn.ExecContext(ctx, "UPDATE "+qualified(t.Name)+" SET "+strings.Join(set, ", ")+where, append(params, wargs...)...)
	if err != nil {
		for i, c := range cols {
			if cerr := castCheck(ctx, t.Columns[c].Type, params[i]); conversionError(err) && cerr != nil {
				return Result{}, invalid(fn, "set column %s (%s): %v", model.Quote(t.Columns[c].Name), t.Columns[c].Type, cerr)
			}
		}
		return Result{}, dbError(fn, "update "+t.Name, err)
	}
	n, _ := res.RowsAffected()
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}

// deleteFn is delete: delete the rows that match where.
type deleteFn struct{}

var _ Function = deleteFn{}

type deleteArgs struct {
	Table string      `json:"table"`
	Where []predicate `json:"where,omitempty"`
	All   bool        `json:"all,omitempty"`
}

func (deleteFn) Name() string { return "delete" }

func (deleteFn) Summary() string {
	return "delete the rows of a table that match structured predicates"
}

var deleteSchema = makeSchema("delete",
	"Deletes every row of main.<table> that matches all predicates in where. Values are bound as parameters. An empty where must be explicit: pass \"all\": true (and no where) to delete every row.",
	`"required": ["table"],
  "oneOf": [
    {"required": ["where"], "properties": {"where": {"minItems": 1}, "all": {"const": false}}},
    {"required": ["all"], "properties": {"all": {"const": true}, "where": {"maxItems": 0}}}
  ],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "where": {"$ref": "#/$defs/where"},
    "all": {"type": "boolean", "description": "true: delete every row (where must be empty)"}
  }`,
	`{"table":"t","where":[{"column":"id","op":"in","value":[1,2]}]}`,
	`{"table":"t","where":[{"column":"v","op":"is_null"}]}`,
	`{"table":"staging_rows","all":true}`,
)

func (deleteFn) Schema() json.RawMessage { return deleteSchema }

func (f deleteFn) Validate(args json.RawMessage) error {
	_, err := f.parse(args)
	return err
}

func (f deleteFn) parseAny(args json.RawMessage) (any, error) { return f.parse(args) }

func (f deleteFn) parse(args json.RawMessage) (*deleteArgs, error) {
	fn := f.Name()
	var a deleteArgs
	if err := decodeArgs(fn, args, &a); err != nil {
		return nil, err
	}
	if err := checkTable(fn, a.Table); err != nil {
		return nil, err
	}
	if err := checkWhere(fn, a.Where, a.All); err != nil {
		return nil, err
	}
	return &a, nil
}

// Apply runs DELETE FROM main.<table> WHERE … with bound values.
func (f deleteFn) Apply(ctx context.Context, env Env, args json.RawMessage) (Result, error) {
	fn := f.Name()
	a, err := f.parse(args)
	if err != nil {
		return Result{}, err
	}
	t, err := mustTable(ctx, env, fn, a.Table)
	if err != nil {
		return Result{}, err
	}
	where, wargs, err := whereSQL(fn, t, a.Where)
	if err != nil {
		return Result{}, err
	}
	res, err := env.Conn.ExecContext(ctx, "DELETE FROM "+qualified(t.Name)+where, wargs...)
	if err != nil {
		return Result{}, dbError(fn, fmt.Sprintf("delete from %s", t.Name), err)
	}
	n, _ := res.RowsAffected()
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}
