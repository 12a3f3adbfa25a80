package functions

import (
	"bytes"
	"encoding/json"
	"strings"
)

// defs are the JSON Schema definitions the functions' schemas share.
const defs = `{
  "table": {
    "description": "A table in schema main: 1 to 63 letters, digits and '_', not starting with a digit, not starting with _teatree (in any case). DuckDB matches table names case-insensitively.",
    "type": "string",
    "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,62}$",
    "not": {"pattern": "^_[Tt][Ee][Aa][Tt][Rr][Ee][Ee]"}
  },
  "column": {
    "description": "A column name: 1 to 255 bytes, no NUL. DuckDB matches column names case-insensitively.",
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[^\\x00]*$"
  },
  "row": {
    "description": "One row: column name to value. Columns left out get their default (NULL unless the table says otherwise). Numbers keep their precision; objects and arrays are stored as JSON text (fit for JSON, LIST and STRUCT columns).",
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"$ref": "#/$defs/column"}
  },
  "scalar": {"type": ["string", "number", "boolean"]},
  "predicate": {
    "description": "column op value. Ops: = != < <= > >= like take one value (like: a string pattern with % and _); in and not_in take a non-empty array of values; is_null and is_not_null take none.",
    "type": "object",
    "additionalProperties": false,
    "required": ["column", "op"],
    "properties": {
      "column": {"$ref": "#/$defs/column"},
      "op": {"enum": ["=", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "is_not_null", "like"]},
      "value": {}
    },
    "allOf": [
      {"if": {"properties": {"op": {"enum": ["is_null", "is_not_null"]}}}, "then": {"not": {"required": ["value"]}}},
      {"if": {"properties": {"op": {"enum": ["in", "not_in"]}}}, "then": {"required": ["value"], "properties": {"value": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/scalar"}}}}},
      {"if": {"properties": {"op": {"enum": ["=", "!=", "<", "<=", ">", ">="]}}}, "then": {"required": ["value"], "properties": {"value": {"$ref": "#/$defs/scalar"}}}},
      {"if": {"properties": {"op": {"const": "like"}}}, "then": {"required": ["value"], "properties": {"value": {"type": "string"}}}}
    ]
  },
  "source": {
    "description": "A Postgres source configured on the db-manager, and what to read from it: a query or a table (see README, Postgres sources, for the type map).",
    "type": "object", "additionalProperties": false, "required": ["name"],
    "oneOf": [{"required": ["query"]}, {"required": ["table"]}],
    "properties": {
      "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$", "description": "a Postgres source configured on the db-manager (TEATREE_SOURCE_<NAME>=postgres://… or --sources FILE); an unknown name fails the request"},
      "query": {"type": "string", "minLength": 1, "description": "one statement returning rows, run in a read-only transaction on the source"},
      "table": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_$]{0,62}(\\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$", "description": "a table (or schema.table) of the source, spelled as its catalog does"}
    }
  },
  "where": {
    "description": "Predicates, all of which a row must match (AND).",
    "type": "array",
    "items": {"$ref": "#/$defs/predicate"}
  }
}`

// makeSchema builds a function's args schema: a draft 2020-12 object
// schema with the shared $defs, body's keywords (properties, required, …)
// and examples. It panics on invalid JSON: schemas are constants, and a
// test compiles every one.
func makeSchema(name, description, body string, examples ...string) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"$schema": "https://json-schema.org/draft/2020-12/schema",`)
	title, _ := json.Marshal(name + " args")
	desc, _ := json.Marshal(description)
	b.WriteString(`"title": ` + string(title) + `, "description": ` + string(desc) + `,`)
	b.WriteString(`"type": "object", "additionalProperties": false,`)
	b.WriteString(body)
	b.WriteString(`, "$defs": ` + defs)
	b.WriteString(`, "examples": [` + strings.Join(examples, ",") + `]}`)
	var out bytes.Buffer
	if err := json.Compact(&out, []byte(b.String())); err != nil {
		panic("functions: schema of " + name + ": " + err.Error())
	}
	return out.Bytes()
}

// schemaExamples returns the examples of a schema made by makeSchema.
func schemaExamples(schema json.RawMessage) []json.RawMessage {
	var s struct {
		Examples []json.RawMessage `json:"examples"`
	}
	json.Unmarshal(schema, &s)
	return s.Examples
}
