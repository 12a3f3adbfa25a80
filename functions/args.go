package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/teatree/teatree/model"
)

// Limits on args. A request is at most model.MaxRequestBytes (1 MiB) on the
// wire; these bound what one request can ask for.
const (
	// MaxTableLen is the longest table name (DuckDB's identifier limit in
	// practice is larger; 63 keeps names valid everywhere teatree uses
	// them: object store keys, Parquet file names, Postgres rows).
	MaxTableLen = 63
	// MaxColumnLen is the longest column name, in bytes.
	MaxColumnLen = 255
	// MaxColumns is the most columns create_table accepts.
	MaxColumns = 4096
	// MaxTypeLen is the longest column type, in bytes.
	MaxTypeLen = 1024
	// MaxNesting is how deeply JSON arrays and objects may nest in args.
	MaxNesting = 64
	// MaxSQLLen is the longest refresh query or sql statement, in bytes.
	MaxSQLLen = model.MaxRequestBytes
)

var tablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// internalPrefix starts the names teatree keeps for itself (schema
// _teatree); no function may name a table so.
const internalPrefix = "_teatree"

// checkTable reports whether name may name a table a function touches:
// `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and not starting with _teatree (in any
// case).
func checkTable(name string) error {
	if name == "" {
		return invalid("table is empty: name a table in schema main")
	}
	if !tablePattern.MatchString(name) {
		return invalid("table %s is not a valid table name: use 1 to %d letters, digits and '_', not starting with a digit", model.Quote(name), MaxTableLen)
	}
	if strings.HasPrefix(strings.ToLower(name), internalPrefix) {
		return invalid("table %q is reserved: names starting with %q are teatree's own", name, internalPrefix)
	}
	return nil
}

// checkColumn reports whether name may name a column: 1 to 255 bytes, no
// NUL. Column names are always quoted with duck.Ident.
func checkColumn(what, name string) error {
	switch {
	case name == "":
		return invalid("%s is empty: columns have names of 1 to %d bytes", what, MaxColumnLen)
	case len(name) > MaxColumnLen:
		return invalid("%s %s is %d bytes long: at most %d are allowed", what, model.Quote(name), len(name), MaxColumnLen)
	case strings.IndexByte(name, 0) >= 0:
		return invalid("%s %s contains a NUL byte", what, model.Quote(name))
	}
	return nil
}

// decodeArgs decodes args, a JSON object, into v, a pointer to a struct,
// strictly: the keys must equal the struct's json names exactly (plain
// encoding/json also matches other cases), appear once, and be known; null
// is allowed only where v holds `any` or json.RawMessage; JSON numbers
// decode as json.Number so that BIGINTs keep their precision; nothing may
// follow the object. Errors wrap model.ErrInvalid and point to 'teactl
// functions fn'.
func decodeArgs(fn string, args json.RawMessage, v any) error {
	if len(bytes.TrimSpace(args)) == 0 {
		return invalid("args are empty: pass a JSON object (see 'teactl functions %s')", fn)
	}
	if err := checkJSON(args, reflect.TypeOf(v).Elem()); err != nil {
		return invalid("%v (see 'teactl functions %s')", model.Shorten(err), fn)
	}
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// te.Value is the JSON kind, for a number followed by the literal.
			kind, _, _ := strings.Cut(te.Value, " ")
			return invalid("%s must be %s, not a JSON %s (see 'teactl functions %s')", te.Field, goTypeName(te.Type), kind, fn)
		}
		return invalid("args: %v (see 'teactl functions %s')", model.Shorten(err), fn)
	}
	return nil
}

// goTypeName names a Go type the way the JSON schema does.
func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	}
	return t.String()
}

var (
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	numberType     = reflect.TypeFor[json.Number]()
)

// checkJSON walks data token by token alongside the Go type t (nil: any
// JSON) and refuses what encoding/json would let through: keys in another
// case than the json tag, duplicate keys, null for a typed field, nesting
// deeper than MaxNesting, data after the value. It reads tokens with
// jsontext (the tokenizer of Go's encoding/json/v2), several times
// cheaper than encoding/json's Decoder.Token; duplicate keys are found
// here, to name them.
func checkJSON(data []byte, t reflect.Type) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	tok, err := dec.ReadToken()
	if err != nil {
		return fmt.Errorf("args are not valid JSON: %v", model.Shorten(err))
	}
	if tok.Kind() != '{' {
		return errors.New("args must be a JSON object")
	}
	if err := walkJSON(dec, tok.Kind(), t, "args", 0); err != nil {
		return err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return errors.New("args have data after the JSON object")
	}
	return nil
}

// walkJSON checks the value that starts with a token of kind k; path names
// it in errors.
func walkJSON(dec *jsontext.Decoder, k jsontext.Kind, t reflect.Type, path string, depth int) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (t == rawMessageType || t.Kind() == reflect.Interface) {
		t = nil // any JSON
	}
	if k != '{' && k != '[' {
		if k == 'n' && t != nil {
			return fmt.Errorf("%s must not be null: leave it out instead", path)
		}
		return nil // scalars: the decoder checks their type
	}
	if depth >= MaxNesting {
		return fmt.Errorf("%s nests deeper than %d levels", path, MaxNesting)
	}
	end := jsontext.Kind(']')
	var seen map[string]bool
	if k == '{' {
		end, seen = '}', map[string]bool{}
	}
	for i := 0; dec.PeekKind() != end; i++ {
		var ft reflect.Type
		var key string
		optional, inMap, top := false, false, false
		if k == '[' {
			if t != nil && t.Kind() == reflect.Slice {
				ft = t.Elem()
			}
		} else {
			tok, err := dec.ReadToken()
			if err != nil {
				return fmt.Errorf("args are not valid JSON: %v", model.Shorten(err))
			}
			key = tok.String()
			if seen[key] {
				return fmt.Errorf("%s has key %s twice", path, model.Quote(key))
			}
			seen[key] = true
			switch {
			case t != nil && t.Kind() == reflect.Struct && t != numberType:
				f, ok := jsonField(t, key)
				if !ok {
					return fmt.Errorf("unknown field %s in %s: the fields are %s", model.Quote(key), path, strings.Join(jsonFields(t), ", "))
				}
				ft = f.Type
				optional = strings.Contains(f.Tag.Get("json"), ",omitempty")
				top = path == "args"
			case t != nil && t.Kind() == reflect.Map:
				ft, inMap = t.Elem(), true
			}
		}
		// sub names the value in errors: rows[3], rows[3].id, a top-level
		// field by its name, a map's value by its quoted key.
		sub := func() string {
			switch {
			case k == '[':
				return path + "[" + strconv.Itoa(i) + "]"
			case inMap:
				return path + "[" + model.Quote(key) + "]"
			case top:
				return key
			}
			return path + "." + key
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return fmt.Errorf("args are not valid JSON: %v", model.Shorten(err))
		}
		if tok.Kind() == '"' && optional && ft.Kind() == reflect.String && tok.String() == "" {
			return fmt.Errorf("%s is empty: leave it out instead", sub())
		}
		// The path is only built for an error or a nested value.
		p := ""
		if kk := tok.Kind(); kk == '{' || kk == '[' || kk == 'n' {
			p = sub()
		}
		if err := walkJSON(dec, tok.Kind(), ft, p, depth+1); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil { // the closing delimiter
		return fmt.Errorf("args are not valid JSON: %v", model.Shorten(err))
	}
	return nil
}

// jsonField returns the field of struct t whose json name is exactly name.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if n, _, _ := strings.Cut(f.Tag.Get("json"), ","); n == name && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// jsonFields lists the json names of struct t.
func jsonFields(t reflect.Type) []string {
	var ns []string
	for i := range t.NumField() {
		if n, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); n != "" && n != "-" {
			ns = append(ns, n)
		}
	}
	return ns
}

// sqlValue turns a decoded JSON value (decoded with UseNumber) into a value
// to bind as a parameter: null → NULL, true/false → BOOLEAN, a string →
// VARCHAR, an integer that fits int64 → BIGINT, any other number → its
// decimal text as VARCHAR (DuckDB casts it exactly to the column's DECIMAL,
// DOUBLE or HUGEINT; a fraction into an integer column is an error, not a
// silent rounding), an array or object → its JSON text (for JSON, LIST and
// STRUCT columns).
func sqlValue(v any) (any, error) {
	switch v := v.(type) {
	case nil, bool, string:
		return v, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i, nil
		}
		return string(v), nil
	case []any, map[string]any:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return string(b), nil
	}
	return nil, fmt.Errorf("unexpected JSON value of type %T", v)
}

// jsonText is the value to bind for a JSON column: the JSON text of v, so
// that "abc" is stored as the JSON string "abc" and 5 as the number 5;
// null stays NULL.
func jsonText(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

var plainDecimal = regexp.MustCompile(`^-?([0-9]+)(?:\.([0-9]+))?$`)

// predicateParam returns the placeholder and the value to bind for v in a
// comparison. A JSON number that does not fit int64 is compared as a
// number, not as text cast to the column's type ('1.5' cast to BIGINT is
// 2): as an exact DECIMAL when it has at most 38 digits and no exponent,
// like a SQL literal, else as a DOUBLE.
func predicateParam(v any) (string, any) {
	n, ok := v.(json.Number)
	if !ok {
		val, _ := sqlValue(v)
		return "?", val
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return "?", i
	}
	if m := plainDecimal.FindStringSubmatch(string(n)); m != nil && len(m[1])+len(m[2]) <= 38 {
		scale := len(m[2])
		return fmt.Sprintf("CAST(? AS DECIMAL(%d,%d))", max(len(m[1])+scale, 1), scale), string(n)
	}
	return "CAST(? AS DOUBLE)", string(n)
}

// decodeValue decodes one JSON value with UseNumber.
func decodeValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// jsonKind names the JSON kind of a decoded value for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
