package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/teatree/teatree/model"
)

// spec declares a function whose args decode into A, a struct with json
// tags. It is all a function is: register turns it into a Function. For
// example:
//
//	var dropTableSpec = spec[dropTableArgs]{
//		Name:        "drop_table",
//		Summary:     "drop a table of schema main",
//		Description: "Drops main.<table>. …",
//		Schema:      `"required": ["table"], "properties": {"table": {"$ref": "#/$defs/table"}, …}`,
//		Examples:    []string{`{"table":"t"}`},
//		Check:       func(a *dropTableArgs) error { return checkTable(a.Table) },
//		Apply:       applyDropTable,
//	}
//
// Decode runs, in order: the strict decoding of args into a new A
// (decodeArgs: unknown fields, keys in another case, duplicate keys and
// null for a typed field are errors), Check, and the JSON schema. Check
// comes before the schema so that its errors, which say what to do, win;
// the schema is what `teactl functions` shows, and it is enforced: args
// it refuses are refused even when Check would let them through.
type spec[A any] struct {
	// Name is the function's name as requests spell it.
	Name string
	// Summary is one line for `teactl functions`.
	Summary string
	// Description is the args schema's description: what the function
	// does with its args.
	Description string
	// Schema holds the args schema's keywords (required, properties,
	// oneOf, …) as a JSON object's members; makeSchema adds the header,
	// the shared $defs (#/$defs/table, column, row, where, …) and
	// Examples.
	Schema string
	// Examples are valid args (a test applies each).
	Examples []string
	// Privileged: the model must enable the function (sql).
	Privileged bool
	// Check checks and may normalise the decoded args without a model
	// (identifiers, ops, column types and SQL on the private parser); nil
	// checks nothing. Its errors wrap model.ErrInvalid (invalid) and do
	// not name the function.
	Check func(a *A) error
	// Apply applies the checked args inside the caller's transaction. It
	// must not change *a: a call may apply again. Its errors do not name
	// the function.
	Apply func(ctx context.Context, env Env, a *A) (Result, error)
}

// function is a spec registered as a Function, with its schema built.
type function[A any] struct {
	s      spec[A]
	schema json.RawMessage
	// compiled compiles schema on first use (compiling all of them costs
	// about 10 ms, which every teactl command would pay at start).
	compiled func() (*jsonschema.Schema, error)
}

// call is a decoded call of function f.
type call[A any] struct {
	f    *function[A]
	args *A
}

var (
	_ Function = (*function[dropTableArgs])(nil)
	_ Call     = call[dropTableArgs]{}
)

// register adds s to the registry. It panics on a duplicate name or a
// schema that is not JSON: specs are constants, and a test compiles every
// schema.
func register[A any](s spec[A]) {
	if _, dup := registry[s.Name]; dup {
		panic("functions: duplicate function " + s.Name)
	}
	registry[s.Name] = newFunction(s)
}

// newFunction builds s's schema.
func newFunction[A any](s spec[A]) *function[A] {
	f := &function[A]{s: s, schema: makeSchema(s.Name, s.Description, s.Schema, s.Examples...)}
	f.compiled = sync.OnceValues(func() (*jsonschema.Schema, error) { return compileSchema(s.Name, f.schema) })
	return f
}

func (f *function[A]) Name() string            { return f.s.Name }
func (f *function[A]) Summary() string         { return f.s.Summary }
func (f *function[A]) Schema() json.RawMessage { return f.schema }
func (f *function[A]) Privileged() bool        { return f.s.Privileged }

// Decode decodes and checks args once; see Function.
func (f *function[A]) Decode(args json.RawMessage) (Call, error) {
	a := new(A)
	if err := decodeArgs(f.s.Name, args, a); err != nil {
		return nil, f.named(err)
	}
	if f.s.Check != nil {
		if err := f.s.Check(a); err != nil {
			return nil, f.named(err)
		}
	}
	if err := f.validate(args); err != nil {
		return nil, f.named(err)
	}
	return call[A]{f: f, args: a}, nil
}

// named is the one place that adds the function's name to its errors.
func (f *function[A]) named(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", f.s.Name, err)
}

func (c call[A]) Function() Function { return c.f }

// Apply applies the call; see Call.
func (c call[A]) Apply(ctx context.Context, env Env) (Result, error) {
	if c.f.s.Privileged && !env.AllowSQL {
		return Result{}, c.f.named(errPrivileged(c.f.s.Name))
	}
	res, err := c.f.s.Apply(ctx, env, c.args)
	return res, c.f.named(err)
}

// compileSchema compiles schema, a draft 2020-12 JSON Schema, with
// formats asserted.
func compileSchema(name string, schema json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	url := "mem:///functions/" + name + ".json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// validate validates args, already decoded once by decodeArgs (so valid
// JSON), against the function's schema. The error is one line: where in
// the args and what is wrong, from the most specific cause.
func (f *function[A]) validate(args json.RawMessage) error {
	schema, err := f.compiled()
	if err != nil {
		return fmt.Errorf("compile the args schema: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(args))
	if err != nil {
		return invalid("args: %v (see 'teactl functions %s')", model.Shorten(err), f.s.Name)
	}
	err = schema.Validate(inst)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return invalid("args: %v (see 'teactl functions %s')", model.Shorten(err), f.s.Name)
	}
	leaf := mostSpecific(ve)
	return invalid("%s: %s (see 'teactl functions %s')", instancePath(inst, leaf.InstanceLocation),
		model.Excerpt(leaf.ErrorKind.LocalizedString(printer), model.MaxErrorText), f.s.Name)
}

// printer renders jsonschema's error kinds.
var printer = message.NewPrinter(language.English)

// mostSpecific returns the cause of e that is deepest in the instance,
// the first of those equally deep: for a bad row that is the row's own
// error, not "oneOf failed" at the top.
func mostSpecific(e *jsonschema.ValidationError) *jsonschema.ValidationError {
	best := e
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			if len(best.Causes) > 0 || len(e.InstanceLocation) > len(best.InstanceLocation) {
				best = e
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(e)
	return best
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// instancePath spells a location in the args as the other errors do:
// args, args.rows[3], args.rows[0]["a b"].
func instancePath(inst any, loc []string) string {
	var b strings.Builder
	b.WriteString("args")
	for _, tok := range loc {
		switch v := inst.(type) {
		case []any:
			b.WriteString("[" + tok + "]")
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(v) {
				inst = v[i]
			} else {
				inst = nil
			}
			continue
		case map[string]any:
			inst = v[tok]
		default:
			inst = nil
		}
		if plainKey.MatchString(tok) && len(tok) <= model.MaxExcerpt {
			b.WriteString("." + tok)
		} else {
			b.WriteString("[" + model.Quote(tok) + "]")
		}
	}
	return b.String()
}

// decoded returns the call's typed args (for tests: they re-marshal them).
func (c call[A]) decoded() any { return c.args }
