package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/model"
)

// Inline values (rows of append and upsert, set of update) go into typed
// columns strictly: a JSON value of the wrong kind is refused rather than
// cast, so that true never becomes 1 in a BIGINT and "  42 " never becomes
// 42. The rules, by column type (README, "Inline values"):
//
//   - null: NULL in any column.
//   - BOOLEAN: true or false.
//   - integer types: a JSON number with no fractional part (2, 2.0, 2.5e1)
//     within the type's range.
//   - DECIMAL(p,s): a JSON number with at most s decimal places and at most
//     p-s digits before the point; never rounded.
//   - integer and DECIMAL columns also take the number as a JSON string in
//     exactly JSON number syntax ("10.50", "9007199254740993"; not " 42 ",
//     "+1" or "0x2A"), by the same rules.
//   - FLOAT, DOUBLE: a JSON number within the type's range (rounded to the
//     nearest value of the type, as every JSON reader does).
//   - VARCHAR: a JSON string. BLOB: a JSON string, stored as its UTF-8
//     bytes.
//   - JSON: any JSON value, stored as its JSON text.
//   - every other type (DATE, TIME, TIMESTAMP…, INTERVAL, UUID, ENUM, BIT,
//     …): a JSON string, cast by DuckDB's own cast exactly as given: white
//     space around it is refused, not trimmed.
//   - T[] and T[n]: a JSON array (of n elements), each element by T's rule;
//     STRUCT(…): a JSON object whose keys are fields, each value by its
//     field's rule; MAP(K, V): a JSON object, keys by K's rule (they are
//     strings), values by V's; UNION(…): a JSON object with one key, the
//     member, whose value goes by the member's rule.

// coerceError is a refused value: what the error message says after the
// row, column and type.
type coerceError struct{ msg string }

func (e coerceError) Error() string { return e.msg }

func refuse(v any, typ, want string) error {
	return coerceError{fmt.Sprintf("JSON %s %s does not go into %s: %s", jsonKind(v), valueExcerpt(v), typ, want)}
}

// valueExcerpt shows a JSON value in an error, bounded (model.Quote).
func valueExcerpt(v any) string {
	switch v := v.(type) {
	case string:
		return model.Quote(v)
	case json.Number:
		return model.Excerpt(string(v), model.MaxExcerpt)
	case bool:
		return strconv.FormatBool(v)
	}
	b, _ := json.Marshal(v)
	return model.Excerpt(string(b), model.MaxExcerpt)
}

// intRanges are the ranges of DuckDB's integer types.
var intRanges = func() map[string][2]*big.Int {
	pow := func(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }
	minus1 := func(x *big.Int) *big.Int { return x.Sub(x, big.NewInt(1)) }
	signed := func(bits uint) [2]*big.Int {
		return [2]*big.Int{new(big.Int).Neg(pow(bits - 1)), minus1(pow(bits - 1))}
	}
	unsigned := func(bits uint) [2]*big.Int { return [2]*big.Int{big.NewInt(0), minus1(pow(bits))} }
	return map[string][2]*big.Int{
		"TINYINT": signed(8), "SMALLINT": signed(16), "INTEGER": signed(32), "BIGINT": signed(64), "HUGEINT": signed(128),
		"UTINYINT": unsigned(8), "USMALLINT": unsigned(16), "UINTEGER": unsigned(32), "UBIGINT": unsigned(64), "UHUGEINT": unsigned(128),
	}
}()

// int64Ranges are intRanges clamped to int64 (VARINT: all of it).
var int64Ranges = func() map[string][2]int64 {
	m := map[string][2]int64{"VARINT": {math.MinInt64, math.MaxInt64}, "BIGNUM": {math.MinInt64, math.MaxInt64}}
	clamp := func(x *big.Int) int64 {
		switch {
		case x.Cmp(big.NewInt(math.MinInt64)) < 0:
			return math.MinInt64
		case x.Cmp(big.NewInt(math.MaxInt64)) > 0:
			return math.MaxInt64
		}
		return x.Int64()
	}
	for t, r := range intRanges {
		m[t] = [2]int64{clamp(r[0]), clamp(r[1])}
	}
	return m
}()

// scaledInteger returns n × 10^scale, n a JSON number, as an integer, or
// ok false when it has a fractional part. huge is true when it has more
// than maxDigits digits (the value is not built then, so 1e999999999 costs
// nothing).
func scaledInteger(n string, scale, maxDigits int) (x *big.Int, ok, tooBig bool) {
	mant, exp, hasExp := strings.Cut(strings.ToLower(n), "e")
	neg := strings.HasPrefix(mant, "-")
	intPart, frac, _ := strings.Cut(strings.TrimPrefix(mant, "-"), ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return new(big.Int), true, false
	}
	e := 0
	if hasExp {
		var err error
		if e, err = strconv.Atoi(strings.TrimPrefix(exp, "+")); err != nil || e > len(n)+maxDigits || e < -len(n)-maxDigits {
			if strings.HasPrefix(exp, "-") {
				return nil, false, false
			}
			return nil, true, true
		}
	}
	shift := e - len(frac) + scale
	if shift < 0 {
		if -shift > len(digits) || strings.TrimLeft(digits[len(digits)+shift:], "0") != "" {
			return nil, false, false
		}
		digits = digits[:len(digits)+shift]
		if digits = strings.TrimLeft(digits, "0"); digits == "" {
			return new(big.Int), true, false
		}
	} else {
		if len(digits)+shift > maxDigits {
			return nil, true, true
		}
		digits += strings.Repeat("0", shift)
	}
	if len(digits) > maxDigits {
		return nil, true, true
	}
	x, _ = new(big.Int).SetString(digits, 10)
	if neg {
		x.Neg(x)
	}
	return x, true, false
}

// coerce checks v, a JSON value decoded with UseNumber, against column type
// typ (DuckDB's spelling) and returns the value to bind for the column's
// placeholder (see placeholder). A refusal is a coerceError.
func coerce(typ string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	if typ == "JSON" {
		return jsonText(v)
	}
	if nestedType(typ) {
		norm, err := checkValue(typ, v)
		if err != nil {
			return nil, refuse(v, typ, err.Error())
		}
		return jsonText(norm) // cast from JSON by the placeholder
	}
	return coerceScalar(typ, v)
}

// nestedType reports whether typ is a LIST, ARRAY, STRUCT, MAP or UNION.
func nestedType(typ string) bool {
	return strings.HasSuffix(typ, "]") || strings.HasPrefix(typ, "STRUCT(") || strings.HasPrefix(typ, "MAP(") || strings.HasPrefix(typ, "UNION(")
}

// placeholder is the bound parameter for a column of type typ: nested
// values are bound as JSON text and cast from JSON (DuckDB's VARCHAR cast
// would parse its own list syntax instead); strings for DuckDB to cast
// (DATE, UUID, BIT, …) as VARCHAR, which the driver binds for any type.
func placeholder(typ string) string {
	switch {
	case nestedType(typ):
		return "CAST(? AS JSON)"
	case castType(typ):
		return "CAST(? AS VARCHAR)"
	}
	return "?"
}

// castType reports whether values of typ are strings that DuckDB casts.
func castType(typ string) bool {
	switch typ {
	case "BOOLEAN", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "JSON", "VARINT", "BIGNUM":
		return false
	}
	return intRanges[typ][0] == nil && !strings.HasPrefix(typ, "DECIMAL(") && !nestedType(typ)
}

// numberText is the syntax of a JSON number (RFC 8259): an integer or
// DECIMAL column also takes its value as a string of exactly that form,
// since many JSON clients hold numbers as doubles and lose digits.
var numberText = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// coerceScalar is coerce for a type that is not nested.
func coerceScalar(typ string, v any) (any, error) {
	n, isNum := v.(json.Number)
	s, isStr := v.(string)
	if isStr && (intRanges[typ][0] != nil || strings.HasPrefix(typ, "DECIMAL(") || typ == "VARINT" || typ == "BIGNUM") && numberText.MatchString(s) {
		n, isNum = json.Number(s), true // exact digits, as protobuf's JSON mapping allows
	}
	switch {
	case typ == "BOOLEAN":
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, refuse(v, typ, "give true or false")
	case intRanges[typ][0] != nil || typ == "VARINT" || typ == "BIGNUM":
		if !isNum {
			return nil, refuse(v, typ, "give a JSON number without a fraction (or one as a string)")
		}
		return coerceInteger(typ, v, string(n))
	case strings.HasPrefix(typ, "DECIMAL("):
		var p, sc int
		if _, err := fmt.Sscanf(typ, "DECIMAL(%d,%d)", &p, &sc); err != nil {
			return nil, fmt.Errorf("column type %s: %w", typ, err)
		}
		if !isNum {
			return nil, refuse(v, typ, "give a JSON number (or one as a string)")
		}
		x, whole, huge := scaledInteger(string(n), sc, 40)
		if !whole {
			return nil, refuse(v, typ, fmt.Sprintf("it has more than %d decimal places (values are not rounded)", sc))
		}
		limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(p)), nil)
		if huge || new(big.Int).Abs(x).Cmp(limit) >= 0 {
			return nil, refuse(v, typ, fmt.Sprintf("it has more than %d digits before the point", p-sc))
		}
		return decimalText(x, sc), nil
	case typ == "DOUBLE" || typ == "FLOAT":
		if !isNum {
			return nil, refuse(v, typ, "give a JSON number")
		}
		bits := 64
		if typ == "FLOAT" {
			bits = 32
		}
		f, err := strconv.ParseFloat(string(n), bits)
		if err != nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return nil, refuse(v, typ, "it is out of range")
		}
		return f, nil
	case typ == "VARCHAR":
		if !isStr {
			return nil, refuse(v, typ, "give a JSON string")
		}
		return s, nil
	case typ == "BLOB":
		if !isStr {
			return nil, refuse(v, typ, "give a JSON string (stored as its UTF-8 bytes)")
		}
		return []byte(s), nil
	}
	// DATE, TIME, TIMESTAMP…, INTERVAL, UUID, ENUM, BIT and the rest:
	// DuckDB casts the string.
	if !isStr {
		return nil, refuse(v, typ, "give a JSON string that DuckDB casts to "+typ)
	}
	if strings.TrimSpace(s) != s {
		return nil, refuse(v, typ, "it has white space around it (values are not trimmed)")
	}
	return s, nil
}

// coerceInteger is coerceScalar for an integer type and a JSON number n
// (v as given).
func coerceInteger(typ string, v any, n string) (any, error) {
	if i, err := strconv.ParseInt(n, 10, 64); err == nil && i >= int64Ranges[typ][0] && i <= int64Ranges[typ][1] {
		return i, nil // the common case, without math/big
	}
	r, bounded := intRanges[typ]
	maxDigits := 40
	if !bounded {
		maxDigits = 10000 // VARINT
	}
	x, whole, huge := scaledInteger(n, 0, maxDigits)
	switch {
	case !whole:
		return nil, refuse(v, typ, "it is not a whole number")
	case !bounded && huge:
		return nil, refuse(v, typ, fmt.Sprintf("it has more than %d digits", maxDigits))
	case huge || bounded && (x.Cmp(r[0]) < 0 || x.Cmp(r[1]) > 0):
		return nil, refuse(v, typ, fmt.Sprintf("it is out of range (%s to %s)", r[0], r[1]))
	case x.IsInt64():
		return x.Int64(), nil
	}
	return x.String(), nil // exact: DuckDB casts the digits
}

// decimalText writes x × 10^-scale as decimal digits with a point.
func decimalText(x *big.Int, scale int) string {
	s := new(big.Int).Abs(x).String()
	if scale > 0 {
		if len(s) <= scale {
			s = strings.Repeat("0", scale-len(s)+1) + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if x.Sign() < 0 {
		s = "-" + s
	}
	return s
}

// checkValue checks v against typ by the rules of coerce, recursively
// for nested types, and returns it ready for DuckDB's JSON cast: STRUCT
// objects get their fields' exact names and null for a missing field.
func checkValue(typ string, v any) (any, error) {
	if v == nil || typ == "JSON" {
		return v, nil
	}
	switch {
	case strings.HasSuffix(typ, "]"):
		elem, size := listElem(typ)
		arr, ok := v.([]any)
		if !ok {
			return nil, refuse(v, typ, "give a JSON array")
		}
		if size >= 0 && len(arr) != size {
			return nil, refuse(v, typ, fmt.Sprintf("give an array of %d elements, not %d", size, len(arr)))
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			n, err := checkValue(elem, e)
			if err != nil {
				return nil, coerceError{fmt.Sprintf("element %d: %v", i, err)}
			}
			out[i] = n
		}
		return out, nil
	case strings.HasPrefix(typ, "STRUCT("):
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, refuse(v, typ, "give a JSON object")
		}
		fields := splitTop(typ[len("STRUCT(") : len(typ)-1])
		out := make(map[string]any, len(fields))
		byName := map[string][2]string{}
		for _, f := range fields {
			name, ftyp := fieldName(f)
			byName[strings.ToLower(name)] = [2]string{name, ftyp}
			out[name] = nil
		}
		for k, e := range obj {
			f, ok := byName[strings.ToLower(k)]
			if !ok {
				return nil, refuse(v, typ, "key "+model.Quote(k)+" is not a field")
			}
			n, err := checkValue(f[1], e)
			if err != nil {
				return nil, coerceError{fmt.Sprintf("field %s: %v", model.Quote(k), err)}
			}
			out[f[0]] = n
		}
		return out, nil
	case strings.HasPrefix(typ, "MAP("):
		obj, ok := v.(map[string]any)
		parts := splitTop(typ[len("MAP(") : len(typ)-1])
		if !ok || len(parts) != 2 {
			return nil, refuse(v, typ, "give a JSON object")
		}
		out := make(map[string]any, len(obj))
		for k, e := range obj {
			if _, err := checkValue(parts[0], k); err != nil {
				return nil, coerceError{fmt.Sprintf("key: %v", err)}
			}
			n, err := checkValue(parts[1], e)
			if err != nil {
				return nil, coerceError{fmt.Sprintf("value of key %s: %v", model.Quote(k), err)}
			}
			out[k] = n
		}
		return out, nil
	case strings.HasPrefix(typ, "UNION("):
		obj, ok := v.(map[string]any)
		if !ok || len(obj) != 1 {
			return nil, refuse(v, typ, `give an object with one key, the member: {"member": value}`)
		}
		for _, f := range splitTop(typ[len("UNION(") : len(typ)-1]) {
			name, ftyp := fieldName(f)
			if e, ok := obj[name]; ok {
				n, err := checkValue(ftyp, e)
				if err != nil {
					return nil, coerceError{fmt.Sprintf("member %s: %v", model.Quote(name), err)}
				}
				return map[string]any{name: n}, nil
			}
		}
		return nil, refuse(v, typ, "its key is not a member")
	}
	if _, err := coerceScalar(typ, v); err != nil {
		return nil, err
	}
	return v, nil
}

// listElem splits "T[]" into T and -1, "T[n]" into T and n.
func listElem(typ string) (string, int) {
	open := strings.LastIndexByte(typ, '[')
	if open < 0 {
		return typ, -1
	}
	n, err := strconv.Atoi(typ[open+1 : len(typ)-1])
	if err != nil {
		n = -1
	}
	return typ[:open], n
}

// splitTop splits s at the commas outside parentheses and double quotes.
func splitTop(s string) []string {
	var parts []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	return append(parts, strings.TrimSpace(s[start:]))
}

// fieldName splits a STRUCT field, `name TYPE` or `"quoted name" TYPE`.
func fieldName(f string) (name, typ string) {
	if strings.HasPrefix(f, `"`) {
		for i := 1; i < len(f); i++ {
			if f[i] == '"' {
				if i+1 < len(f) && f[i+1] == '"' {
					i++
					continue
				}
				return strings.ReplaceAll(f[1:i], `""`, `"`), strings.TrimSpace(f[i+1:])
			}
		}
	}
	name, typ, _ = strings.Cut(f, " ")
	return name, strings.TrimSpace(typ)
}

// badCast finds, after DuckDB refused to cast a string, which row and
// column it was: it casts each string of a cast-typed column (DATE, UUID,
// …) on the private parser DuckDB (the model's transaction is aborted by
// then). It returns nil when no single value fails there.
func badCast(ctx context.Context, t table, rows []boundRow) error {
	for i, r := range rows {
		for j, c := range t.Columns {
			if err := castCheck(ctx, c.Type, r.vals[j]); r.has[j] && err != nil {
				return invalid("row %d: column %s (%s): %v", i, model.Quote(c.Name), c.Type, err)
			}
		}
	}
	return nil
}

// castCheck casts v, when it is a string for a cast-typed column, to typ
// on the private parser DuckDB, and returns the conversion error.
func castCheck(ctx context.Context, typ string, v any) error {
	s, ok := v.(string)
	if !ok || !castType(typ) {
		return nil
	}
	db, err := parserDB()
	if err != nil {
		return nil
	}
	var discard any
	err = db.QueryRowContext(ctx, "SELECT CAST(?::VARCHAR AS "+typ+")", s).Scan(&discard)
	if de := (*duckdb.Error)(nil); errors.As(err, &de) && de.Type == duckdb.ErrorTypeConversion {
		return coerceError{fmt.Sprintf("JSON string %s is not a %s: %s", model.Quote(s), typ, firstLine(err))}
	}
	return nil
}

// conversionError reports whether err is DuckDB's conversion error.
func conversionError(err error) bool {
	var de *duckdb.Error
	return errors.As(err, &de) && de.Type == duckdb.ErrorTypeConversion
}
