package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/teatree/teatree/model"
)

// validate is Decode for a test that needs only the verdict.
func validate(f Function, args json.RawMessage) error {
	_, err := f.Decode(args)
	return err
}

// decoded returns the typed args of a call (a pointer to the spec's args
// struct).
func decoded(c Call) any { return c.(interface{ decoded() any }).decoded() }

func TestAllAndLookup(t *testing.T) {
	var got []string
	for _, f := range All() {
		got = append(got, f.Name())
		if f.Summary() == "" || strings.Contains(f.Summary(), "\n") {
			t.Errorf("%s: summary %q is not one line", f.Name(), f.Summary())
		}
		g, err := Lookup(f.Name())
		if err != nil || g.Name() != f.Name() {
			t.Errorf("Lookup(%q) = %v, %v", f.Name(), g, err)
		}
	}
	want := []string{"append", "create_table", "delete", "derive", "drop_table", "refresh", "register_module", "sql", "update", "upsert", "wasm"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("All() names (-want +got):\n%s", diff)
	}
	if !sort.StringsAreSorted(got) {
		t.Errorf("All() is not sorted: %v", got)
	}
	_, err := Lookup("insert")
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("Lookup(insert) = %v, want ErrInvalid", err)
	}
	for _, n := range want {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("Lookup error %q does not list %s", err, n)
		}
	}
	if _, err := Lookup("APPEND"); err == nil {
		t.Error("Lookup is case-insensitive; names are exact")
	}
}

func TestValidateRequest(t *testing.T) {
	req := func(fn, args string) model.Request {
		return model.Request{ID: "r1", Model: "m", Function: fn, Args: json.RawMessage(args)}
	}
	ok := []struct {
		r        model.Request
		allowSQL bool
	}{
		{req("append", `{"table":"t","rows":[{"id":1}]}`), false},
		{req("sql", `{"sql":"DELETE FROM t WHERE id = 1"}`), true},
	}
	for _, tc := range ok {
		if err := ValidateRequest(tc.r, tc.allowSQL); err != nil {
			t.Errorf("ValidateRequest(%s %s, %v) = %v", tc.r.Function, tc.r.Args, tc.allowSQL, err)
		}
	}
	bad := []struct {
		r        model.Request
		allowSQL bool
		want     string
	}{
		{req("nope", `{}`), true, "unknown function"},
		{req("sql", `{"sql":"DELETE FROM t"}`), false, "not enabled"},
		{req("sql", `{"sql":"ATTACH 'x.db'"}`), true, "ATTACH"},
		{req("append", `{"table":"t"}`), false, "rows"},
		{req("append", `{"table":"t","rows":[{"id":1}]}x`), false, "data after the JSON object"},
	}
	for _, tc := range bad {
		err := ValidateRequest(tc.r, tc.allowSQL)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "request r1") {
			t.Errorf("ValidateRequest(%s %s, %v) = %v, want ErrInvalid naming request r1 and containing %q", tc.r.Function, tc.r.Args, tc.allowSQL, err, tc.want)
		}
	}
}

// shownSchema compiles the schema `teactl functions` shows for f.
func shownSchema(t testing.TB, f Function) *jsonschema.Schema {
	t.Helper()
	s, err := compileSchema(f.Name(), f.Schema())
	if err != nil {
		t.Fatalf("%s: schema does not compile: %v", f.Name(), err)
	}
	return s
}

// schemaValidate validates args against s.
func schemaValidate(s *jsonschema.Schema, args []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(args))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

func TestSchemas(t *testing.T) {
	for _, f := range All() {
		t.Run(f.Name(), func(t *testing.T) {
			if !json.Valid(f.Schema()) {
				t.Fatalf("schema is not valid JSON: %s", f.Schema())
			}
			var top struct {
				Schema     string                     `json:"$schema"`
				Type       string                     `json:"type"`
				Additional *bool                      `json:"additionalProperties"`
				Properties map[string]json.RawMessage `json:"properties"`
			}
			if err := json.Unmarshal(f.Schema(), &top); err != nil {
				t.Fatal(err)
			}
			if top.Schema != "https://json-schema.org/draft/2020-12/schema" || top.Type != "object" || top.Additional == nil || *top.Additional {
				t.Errorf("schema header: $schema %q, type %q, additionalProperties %v", top.Schema, top.Type, top.Additional)
			}
			s := shownSchema(t, f)
			// The schema's properties are exactly the args struct's fields.
			c, err := f.Decode(schemaExamples(f.Schema())[0])
			if err != nil {
				t.Fatalf("first example: %v", err)
			}
			v := decoded(c)
			var props []string
			for p := range top.Properties {
				props = append(props, p)
			}
			slices.Sort(props)
			fields := jsonFields(reflect.TypeOf(v).Elem())
			slices.Sort(fields)
			if diff := cmp.Diff(fields, props); diff != "" {
				t.Errorf("schema properties vs args fields (-fields +properties):\n%s", diff)
			}
			examples := schemaExamples(f.Schema())
			if len(examples) == 0 {
				t.Fatal("schema has no examples")
			}
			for _, ex := range examples {
				if err := validate(f, ex); err != nil {
					t.Errorf("example %s: Decode: %v", ex, err)
				}
				if err := schemaValidate(s, ex); err != nil {
					t.Errorf("example %s: schema: %v", ex, err)
				}
			}
		})
	}
}

// TestSchemaAgreesWithValidate: of the args Validate refuses, the schema
// refuses exactly those not marked schemaOK (the rest need DuckDB's parser,
// or rules JSON Schema cannot state).
func TestSchemaAgreesWithValidate(t *testing.T) {
	schemas := map[string]*jsonschema.Schema{}
	for _, f := range All() {
		schemas[f.Name()] = shownSchema(t, f)
	}
	for i, tc := range badArgs {
		err := schemaValidate(schemas[tc.fn], []byte(tc.args))
		switch {
		case err == nil && !tc.schemaOK:
			t.Errorf("%d %s %.80s: Validate refuses it (%s) but the schema accepts it", i, tc.fn, tc.args, tc.want)
		case err != nil && tc.schemaOK:
			t.Errorf("%d %s %.80s: marked schemaOK but the schema refuses it: %v", i, tc.fn, tc.args, err)
		}
	}
}
