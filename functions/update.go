package functions

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// update and delete share how they pick rows: a table, and where (all
// predicates must match) or an explicit "all": true. The rule is
// checkFilter, the schema filterSchema, the lookup filterTable.

type updateArgs struct {
	Table string         `json:"table"`
	Set   map[string]any `json:"set"`
	Where []predicate    `json:"where,omitempty"`
	All   bool           `json:"all,omitempty"`
}

type deleteArgs struct {
	Table string      `json:"table"`
	Where []predicate `json:"where,omitempty"`
	All   bool        `json:"all,omitempty"`
}

// filterSchema holds the schema keywords of table, where and all; a
// schema using it ends its properties with them.
const filterSchema = `"oneOf": [
    {"required": ["where"], "properties": {"where": {"minItems": 1}, "all": {"const": false}}},
    {"required": ["all"], "properties": {"all": {"const": true}, "where": {"maxItems": 0}}}
  ],
  "properties": {
    "table": {"$ref": "#/$defs/table"},
    "where": {"$ref": "#/$defs/where"},
    "all": {"type": "boolean", "description": "true: touch every row (where must be empty)"}`

// updateSpec is update: set columns of the rows that match where.
var updateSpec = spec[updateArgs]{
	Name:        "update",
	Summary:     "set columns of the rows of a table that match structured predicates",
	Description: "Sets the columns in set (column name to value; null sets NULL) of every row of main.<table> that matches all predicates in where. Values are bound as parameters. An empty where must be explicit: pass \"all\": true (and no where) to update every row.",
	Schema: `"required": ["table", "set"], ` + filterSchema + `,
    "set": {"type": "object", "minProperties": 1, "propertyNames": {"$ref": "#/$defs/column"}}
  }`,
	Examples: []string{
		`{"table":"t","set":{"v":"b"},"where":[{"column":"id","op":"=","value":1}]}`,
		`{"table":"t","set":{"v":null,"n":0},"where":[{"column":"v","op":"like","value":"tmp%"},{"column":"id","op":">=","value":100}]}`,
		`{"table":"t","set":{"checked":true},"all":true}`,
	},
	Check: func(a *updateArgs) error {
		if err := checkFilter(a.Table, a.Where, a.All); err != nil {
			return err
		}
		if len(a.Set) == 0 {
			return invalid("set is empty: give the columns to set, e.g. {\"v\":\"b\"}")
		}
		for c := range a.Set {
			if err := checkColumn("set column", c); err != nil {
				return err
			}
		}
		return nil
	},
	Apply: applyUpdate,
}

// deleteSpec is delete: delete the rows that match where.
var deleteSpec = spec[deleteArgs]{
	Name:        "delete",
	Summary:     "delete the rows of a table that match structured predicates",
	Description: "Deletes every row of main.<table> that matches all predicates in where. Values are bound as parameters. An empty where must be explicit: pass \"all\": true (and no where) to delete every row.",
	Schema:      `"required": ["table"], ` + filterSchema + `}`,
	Examples: []string{
		`{"table":"t","where":[{"column":"id","op":"in","value":[1,2]}]}`,
		`{"table":"t","where":[{"column":"v","op":"is_null"}]}`,
		`{"table":"staging_rows","all":true}`,
	},
	Check: func(a *deleteArgs) error { return checkFilter(a.Table, a.Where, a.All) },
	Apply: applyDelete,
}

// checkFilter checks the table, where and all of an update or delete.
func checkFilter(name string, where []predicate, all bool) error {
	if err := checkTable(name); err != nil {
		return err
	}
	return checkWhere(where, all)
}

// filterTable looks up table name for an update or delete and renders
// where against its columns (whereSQL).
func filterTable(ctx context.Context, env Env, name string, where []predicate) (t table, cond string, params []any, err error) {
	if t, err = mustTable(ctx, env, name); err != nil {
		return table{}, "", nil, err
	}
	cond, params, err = whereSQL(t, where)
	return t, cond, params, err
}

// applyDelete runs DELETE FROM main.<table> WHERE … with bound values.
func applyDelete(ctx context.Context, env Env, a *deleteArgs) (Result, error) {
	t, cond, params, err := filterTable(ctx, env, a.Table, a.Where)
	if err != nil {
		return Result{}, err
	}
	res, err := env.Conn.ExecContext(ctx, "DELETE FROM "+qualified(t.Name)+cond, params...)
	if err != nil {
		return Result{}, dbError(fmt.Sprintf("delete from %s", t.Name), err)
	}
	n, _ := res.RowsAffected()
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}

// applyUpdate runs UPDATE main.<table> SET … WHERE … with bound values.
func applyUpdate(ctx context.Context, env Env, a *updateArgs) (Result, error) {
	t, cond, wparams, err := filterTable(ctx, env, a.Table, a.Where)
	if err != nil {
		return Result{}, err
	}
	keys := make([]string, 0, len(a.Set))
	for k := range a.Set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cols, err := t.resolveIdx("set column", keys)
	if err != nil {
		return Result{}, err
	}
	var set []string
	var params []any
	for i, c := range cols {
		name := t.Columns[c].Name
		v, err := t.bindValue(c, a.Set[keys[i]])
		if err != nil {
			return Result{}, invalid("set column %s (%s): %v", model.Quote(name), t.Columns[c].Type, err)
		}
		set = append(set, duck.Ident(name)+" = "+placeholder(t.Columns[c].Type))
		params = append(params, v)
	}
	res, err := env.Conn.ExecContext(ctx, "UPDATE "+qualified(t.Name)+" SET "+strings.Join(set, ", ")+cond, append(params, wparams...)...)
	if err != nil {
		for i, c := range cols {
			if cerr := castCheck(ctx, t.Columns[c].Type, params[i]); conversionError(err) && cerr != nil {
				return Result{}, invalid("set column %s (%s): %v", model.Quote(t.Columns[c].Name), t.Columns[c].Type, cerr)
			}
		}
		return Result{}, dbError("update "+t.Name, err)
	}
	n, _ := res.RowsAffected()
	return Result{Tables: []string{t.Name}, Rows: n}, nil
}
