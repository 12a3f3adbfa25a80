package snapshot

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/teatree/teatree/duck"
)

// Parquet encodings. DuckDB 1.5's Parquet writer changes some types on
// the way to Parquet and back (read_parquet): HUGEINT and UHUGEINT become
// DOUBLE (precision lost), a TIME WITH TIME ZONE loses its offset, an
// INTERVAL its microseconds (and a negative one fails the export), an
// infinite TIMESTAMP_S fails the export, a VARIANT holding a HUGEINT,
// INTERVAL, BIT, … fails it. ExportColumns rewrites such columns, also
// inside STRUCT, LIST, ARRAY, MAP and UNION, into types Parquet holds
// exactly, and records in each Column the type read_parquet returns and
// the SQL that restores the original. docs/decisions.md ("Parquet
// encodings") has the table and the experiments behind it.

// leafEncoding is how a scalar DuckDB type goes to Parquet.
type leafEncoding struct {
	to   string // the type it is cast to before the export; "" = written as it is
	back string // the type read_parquet returns for it when that differs ("" = to, or the type itself)
	how  string // the encoding in words, for Column.Encoding
}

// intervalStruct is the type an INTERVAL is written as: its three fields,
// which DuckDB keeps apart and compares only normalised.
const intervalStruct = `STRUCT("months" INTEGER, "days" INTEGER, micros BIGINT)`

// leafEncodings are the scalar types whose round trip through Parquet is
// not exact in DuckDB 1.5.6, by the name duckdb_columns() prints (aliases
// map to it in leafAliases). Every other scalar type reads back as it was.
var leafEncodings = map[string]leafEncoding{
	"HUGEINT":             {to: "VARCHAR", how: "HUGEINT as decimal text"},
	"UHUGEINT":            {to: "VARCHAR", how: "UHUGEINT as decimal text"},
	"BIGNUM":              {to: "VARCHAR", how: "BIGNUM as decimal text"},
	"BIT":                 {to: "VARCHAR", how: "BIT as text of 0 and 1"},
	"TIME WITH TIME ZONE": {to: "VARCHAR", how: "TIME WITH TIME ZONE as text with its offset"},
	"INTERVAL":            {to: intervalStruct, how: "INTERVAL as " + intervalStruct},
	"TIMESTAMP_S":         {to: "TIMESTAMP", how: "TIMESTAMP_S as TIMESTAMP (exact, and DuckDB cannot write an infinite TIMESTAMP_S)"},
	"TIMESTAMP_MS":        {back: "TIMESTAMP", how: "TIMESTAMP_MS read back as TIMESTAMP (exact)"},
	"VARIANT":             {to: "JSON", how: "VARIANT as JSON (lossy: its values take JSON's types, NULL becomes null)"},
	"GEOMETRY":            {to: "VARCHAR", how: "GEOMETRY as WKT text"},
	"ENUM":                {to: "VARCHAR", how: "ENUM as its label"},
}

// leafAliases are other spellings of the types in leafEncodings.
var leafAliases = map[string]string{
	"INT128": "HUGEINT", "UINT128": "UHUGEINT", "VARINT": "BIGNUM", "BITSTRING": "BIT",
	"TIMETZ": "TIME WITH TIME ZONE",
}

// leafKey is the key of leaf type name in leafEncodings ("" for the
// types written as they are).
func leafKey(name string) string {
	u := strings.ToUpper(strings.TrimSpace(name))
	for _, p := range []string{"ENUM", "GEOMETRY"} {
		if u == p || strings.HasPrefix(u, p+"(") {
			return p
		}
	}
	if a, ok := leafAliases[u]; ok {
		return a
	}
	if _, ok := leafEncodings[u]; ok {
		return u
	}
	return ""
}

// kind is the shape of a dtype.
type kind uint8

const (
	leaf kind = iota
	listT
	arrayT
	structT
	mapT
	union
)

// dtype is a DuckDB type as duckdb_columns().data_type prints it, parsed
// as far as the nested types go: scalar types (with their parameters, e.g.
// DECIMAL(18,3), ENUM('a', 'b'), TIME WITH TIME ZONE) stay text.
type dtype struct {
	kind   kind
	name   string  // leaf: the type's text
	elem   *dtype  // list, array: the element type
	size   string  // array: the number of elements (digits)
	fields []field // struct, union: the members; map: key and value
}

// field is a member of a STRUCT or UNION (name as DuckDB prints it, bare
// or "quoted"), or the key or value of a MAP (name "").
type field struct {
	name string
	typ  *dtype
}

// maxTypeDepth bounds the nesting parseType accepts (DuckDB's own parser
// stops far below it).
const maxTypeDepth = 100

// maxTypeLen bounds the length of a type string parseType accepts.
const maxTypeLen = 1 << 20

// parseType parses a DuckDB type string as duckdb_columns().data_type
// prints it: STRUCT(name type, …), UNION(name type, …), MAP(key, value),
// a type followed by [] (LIST) or [n] (ARRAY), or any other type text, in
// which quotes ('…', "…", doubled to escape) and parentheses must balance.
// Errors name the byte where the text stops making sense.
func parseType(s string) (*dtype, error) {
	if len(s) > maxTypeLen {
		return nil, fmt.Errorf("type is %d bytes long, at most %d are allowed", len(s), maxTypeLen)
	}
	p := typeParser{s: s}
	t, err := p.typ()
	if err != nil {
		return nil, err
	}
	if p.i != len(s) {
		return nil, fmt.Errorf("type %q: unexpected %q at byte %d", s, s[p.i:], p.i)
	}
	return t, nil
}

type typeParser struct {
	s     string
	i     int
	depth int
}

func (p *typeParser) errorf(format string, args ...any) error {
	return fmt.Errorf("type %q at byte %d: %s", p.s, p.i, fmt.Sprintf(format, args...))
}

// prefix consumes word (ASCII, case-insensitive) if the text continues with it.
func (p *typeParser) prefix(word string) bool {
	if len(p.s)-p.i >= len(word) && strings.EqualFold(p.s[p.i:p.i+len(word)], word) {
		p.i += len(word)
		return true
	}
	return false
}

func (p *typeParser) expect(word string) error {
	if !p.prefix(word) {
		return p.errorf("want %q", word)
	}
	return nil
}

func (p *typeParser) typ() (*dtype, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxTypeDepth {
		return nil, p.errorf("nested deeper than %d", maxTypeDepth)
	}
	var t *dtype
	var err error
	switch {
	case p.prefix("STRUCT("):
		t, err = p.members(structT)
	case p.prefix("UNION("):
		t, err = p.members(union)
	case p.prefix("MAP("):
		t = &dtype{kind: mapT}
		for _, end := range []string{", ", ")"} {
			k, err := p.typ()
			if err != nil {
				return nil, err
			}
			t.fields = append(t.fields, field{typ: k})
			if err := p.expect(end); err != nil {
				return nil, err
			}
		}
	default:
		t, err = p.scalar()
	}
	if err != nil {
		return nil, err
	}
	for p.i < len(p.s) && p.s[p.i] == '[' {
		p.i++
		start := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		size := p.s[start:p.i]
		if err := p.expect("]"); err != nil {
			return nil, err
		}
		if size == "" {
			t = &dtype{kind: listT, elem: t}
		} else {
			t = &dtype{kind: arrayT, elem: t, size: size}
		}
	}
	return t, nil
}

// members parses "name type, name type)" after STRUCT( or UNION(.
func (p *typeParser) members(k kind) (*dtype, error) {
	t := &dtype{kind: k}
	for {
		start := p.i
		if p.i < len(p.s) && p.s[p.i] == '"' {
			if err := p.skipQuoted('"'); err != nil {
				return nil, err
			}
		} else {
			for p.i < len(p.s) && !strings.ContainsRune(` ,()[]'"`, rune(p.s[p.i])) {
				p.i++
			}
		}
		name := p.s[start:p.i]
		if name == "" {
			return nil, p.errorf("want a member name")
		}
		if err := p.expect(" "); err != nil {
			return nil, err
		}
		ft, err := p.typ()
		if err != nil {
			return nil, err
		}
		t.fields = append(t.fields, field{name: name, typ: ft})
		if p.prefix(")") {
			return t, nil
		}
		if err := p.expect(", "); err != nil {
			return nil, err
		}
	}
}

// skipQuoted consumes a quoted string or identifier starting at p.i
// (quote doubled inside to escape it).
func (p *typeParser) skipQuoted(q byte) error {
	start := p.i
	p.i++
	for p.i < len(p.s) {
		if p.s[p.i] == q {
			if p.i+1 < len(p.s) && p.s[p.i+1] == q {
				p.i += 2
				continue
			}
			p.i++
			return nil
		}
		p.i++
	}
	p.i = start
	return p.errorf("unterminated %c", q)
}

// scalar parses a scalar type's text: up to a ',', ')' or '[' outside
// quotes and parentheses.
func (p *typeParser) scalar() (*dtype, error) {
	start := p.i
	depth := 0
loop:
	for p.i < len(p.s) {
		switch c := p.s[p.i]; c {
		case '\'', '"':
			if err := p.skipQuoted(c); err != nil {
				return nil, err
			}
			continue
		case '(':
			depth++
		case ')':
			if depth == 0 {
				break loop
			}
			depth--
		case ',', '[', ']':
			if depth == 0 {
				break loop
			}
		}
		p.i++
	}
	if depth > 0 {
		return nil, p.errorf("unbalanced (")
	}
	name := p.s[start:p.i]
	if strings.TrimSpace(name) != name || name == "" {
		p.i = start
		return nil, p.errorf("want a type")
	}
	return &dtype{kind: leaf, name: name}, nil
}

// String prints t as DuckDB does.
func (t *dtype) String() string {
	var b strings.Builder
	t.write(&b)
	return b.String()
}

func (t *dtype) write(b *strings.Builder) {
	switch t.kind {
	case leaf:
		b.WriteString(t.name)
	case listT:
		t.elem.write(b)
		b.WriteString("[]")
	case arrayT:
		t.elem.write(b)
		b.WriteString("[" + t.size + "]")
	case structT, union, mapT:
		b.WriteString(map[kind]string{structT: "STRUCT(", union: "UNION(", mapT: "MAP("}[t.kind])
		for i, f := range t.fields {
			if i > 0 {
				b.WriteString(", ")
			}
			if f.name != "" {
				b.WriteString(f.name + " ")
			}
			f.typ.write(b)
		}
		b.WriteString(")")
	}
}

// memberName is the name of a STRUCT or UNION member as printed, unquoted.
func memberName(printed string) string {
	if len(printed) >= 2 && printed[0] == '"' {
		return strings.ReplaceAll(printed[1:len(printed)-1], `""`, `"`)
	}
	return printed
}

// encoded is the type t is exported as, and whether that is another type.
func (t *dtype) encoded() (*dtype, bool) {
	switch t.kind {
	case leaf:
		if e := leafEncodings[leafKey(t.name)]; e.to != "" {
			to, _ := parseType(e.to)
			return to, true
		}
		return t, false
	case listT, arrayT:
		e, changed := t.elem.encoded()
		if !changed {
			return t, false
		}
		return &dtype{kind: t.kind, elem: e, size: t.size}, true
	default:
		out := &dtype{kind: t.kind}
		if t.kind == union && t.hasInterval() { // see encodeExpr
			out.kind = structT
			out.fields = []field{{name: unionTag(t), typ: &dtype{kind: leaf, name: "VARCHAR"}}}
		}
		some := false
		for _, f := range t.fields {
			e, changed := f.typ.encoded()
			some = some || changed
			out.fields = append(out.fields, field{name: f.name, typ: e})
		}
		if !some {
			return t, false
		}
		return out, true
	}
}

// readBack is the type read_parquet returns for a column DuckDB wrote with
// type t (an encoded type): fixed-size arrays become lists, a UNION a
// STRUCT of its tag (UTINYINT, unnamed) and its members (which DuckDB
// then prints without names), a TIMESTAMP_MS a TIMESTAMP.
func (t *dtype) readBack() *dtype {
	switch t.kind {
	case leaf:
		if e := leafEncodings[leafKey(t.name)]; e.back != "" {
			return &dtype{kind: leaf, name: e.back}
		}
		return t
	case listT, arrayT:
		return &dtype{kind: listT, elem: t.elem.readBack()}
	case union:
		out := &dtype{kind: structT, fields: []field{{typ: &dtype{kind: leaf, name: "UTINYINT"}}}}
		for _, f := range t.fields {
			out.fields = append(out.fields, field{typ: f.typ.readBack()})
		}
		return out
	default:
		out := &dtype{kind: t.kind}
		for _, f := range t.fields {
			out.fields = append(out.fields, field{name: f.name, typ: f.typ.readBack()})
		}
		return out
	}
}

// hasInterval reports whether t holds an INTERVAL, which no cast encodes.
func (t *dtype) hasInterval() bool {
	if t.kind == leaf {
		return leafKey(t.name) == "INTERVAL"
	}
	if t.elem != nil {
		return t.elem.hasInterval()
	}
	for _, f := range t.fields {
		if f.typ.hasInterval() {
			return true
		}
	}
	return false
}

// hows appends the encodings of the scalar types in t to out, once each.
func (t *dtype) hows(out []string) []string {
	switch {
	case t.kind == leaf:
		if e, ok := leafEncodings[leafKey(t.name)]; ok {
			for _, h := range out {
				if h == e.how {
					return out
				}
			}
			return append(out, e.how)
		}
	case t.elem != nil:
		if t.kind == arrayT {
			out = appendOnce(out, "fixed-size ARRAY as LIST")
		}
		return t.elem.hows(out)
	default:
		if t.kind == union {
			out = appendOnce(out, "UNION as STRUCT(tag, members)")
		}
		for _, f := range t.fields {
			out = f.typ.hows(out)
		}
	}
	return out
}

func appendOnce(out []string, s string) []string {
	for _, h := range out {
		if h == s {
			return out
		}
	}
	return append(out, s)
}

// lambdaVar is the name of the lambda parameter at nesting depth d of an
// encoding expression.
func lambdaVar(d int) string { return "teatree_x" + strconv.Itoa(d) }

// encodeExpr is the SQL expression that turns x (of type t) into a value
// of t.encoded(). Casts do it for every type but INTERVAL, which has no
// cast to a type Parquet holds: a type holding one is taken apart.
func encodeExpr(x string, t *dtype, d int) string {
	enc, changed := t.encoded()
	if !changed {
		return x
	}
	if !t.hasInterval() {
		return "CAST(" + x + " AS " + enc.String() + ")"
	}
	v := lambdaVar(d)
	switch t.kind {
	case leaf: // INTERVAL: months, days and microseconds, as DuckDB keeps them
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE {'months': CAST(datepart('year', " + x + ") * 12 + datepart('month', " + x + ") AS INTEGER), " +
			"'days': CAST(datepart('day', " + x + ") AS INTEGER), " +
			"'micros': datepart('hour', " + x + ") * 3600000000 + datepart('minute', " + x + ") * 60000000 + datepart('microseconds', " + x + ")} END"
	case listT, arrayT:
		return "list_transform(" + x + ", lambda " + v + ": " + encodeExpr(v, t.elem, d+1) + ")"
	case mapT:
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE map_from_entries(list_transform(map_entries(" + x + "), lambda " + v + ": {'key': " +
			encodeExpr(v+".key", t.fields[0].typ, d+1) + ", 'value': " + encodeExpr(v+".value", t.fields[1].typ, d+1) + "})) END"
	case structT:
		var parts []string
		for _, f := range t.fields {
			n := memberName(f.name)
			parts = append(parts, duck.Literal(n)+": "+encodeExpr("struct_extract("+x+", "+duck.Literal(n)+")", f.typ, d))
		}
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE {" + strings.Join(parts, ", ") + "} END"
	default: // UNION: its tag's name and the members
		parts := []string{duck.Literal(unionTag(t)) + ": CAST(union_tag(" + x + ") AS VARCHAR)"}
		for _, f := range t.fields {
			n := memberName(f.name)
			parts = append(parts, duck.Literal(n)+": "+encodeExpr("union_extract("+x+", "+duck.Literal(n)+")", f.typ, d))
		}
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE {" + strings.Join(parts, ", ") + "} END"
	}
}

// unionTag is the name of the tag field of a UNION holding an INTERVAL
// once written as a STRUCT: "tag", with '_' appended until no member has
// the name.
func unionTag(t *dtype) string {
	tag := "tag"
	for taken := true; taken; {
		taken = false
		for _, f := range t.fields {
			if strings.EqualFold(memberName(f.name), tag) {
				tag, taken = tag+"_", true
			}
		}
	}
	return tag
}

// restoreExpr is the SQL expression that turns x, read back from Parquet
// for a value of type t, into the value of type t: a cast, or for types
// holding an INTERVAL the reverse of encodeExpr.
func restoreExpr(x string, t *dtype, d int) string {
	enc, _ := t.encoded()
	if enc.readBack().String() == t.String() {
		return x
	}
	if !t.hasInterval() {
		return "CAST(" + x + " AS " + t.String() + ")"
	}
	v := lambdaVar(d)
	switch t.kind {
	case leaf:
		return "to_months(struct_extract(" + x + ", 'months')) + to_days(struct_extract(" + x + ", 'days')) + to_microseconds(struct_extract(" + x + ", 'micros'))"
	case listT:
		return "list_transform(" + x + ", lambda " + v + ": " + restoreExpr(v, t.elem, d+1) + ")"
	case arrayT: // a LIST here: DuckDB's CASE cannot return an ARRAY; restoreColumn casts
		return "list_transform(" + x + ", lambda " + v + ": " + restoreExpr(v, t.elem, d+1) + ")"
	case mapT:
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE map_from_entries(list_transform(map_entries(" + x + "), lambda " + v + ": {'key': " +
			restoreExpr(v+".key", t.fields[0].typ, d+1) + ", 'value': " + restoreExpr(v+".value", t.fields[1].typ, d+1) + "})) END"
	case structT:
		var parts []string
		for _, f := range t.fields {
			n := memberName(f.name)
			parts = append(parts, duck.Literal(n)+": "+restoreExpr("struct_extract("+x+", "+duck.Literal(n)+")", f.typ, d))
		}
		return "CASE WHEN " + x + " IS NULL THEN NULL ELSE {" + strings.Join(parts, ", ") + "} END"
	default:
		var b strings.Builder
		b.WriteString("CASE struct_extract(" + x + ", " + duck.Literal(unionTag(t)) + ")")
		for _, f := range t.fields {
			n := memberName(f.name)
			b.WriteString(" WHEN " + duck.Literal(n) + " THEN CAST(union_value(" + duck.Ident(n) + " := " +
				restoreExpr("struct_extract("+x+", "+duck.Literal(n)+")", f.typ, d) + ") AS " + t.String() + ")")
		}
		b.WriteString(" END")
		return b.String()
	}
}

// restoreColumn is the SQL expression restoring column x of type t from
// read_parquet: restoreExpr, cast to t where it takes values apart (to
// turn its lists back into ARRAYs).
func restoreColumn(x string, t *dtype) string {
	r := restoreExpr(x, t, 1)
	if t.kind == leaf || !t.hasInterval() {
		return r
	}
	return "CAST(" + r + " AS " + t.String() + ")"
}

// ExportColumns returns the SELECT list that exports columns cols (names
// and DuckDB types as duckdb_columns().data_type prints them) to Parquet
// without losing values, and cols with Parquet (the type read_parquet then
// returns, when it is not Type) and Encoding ("<how>; <SQL restoring the
// column from read_parquet>") filled in for every column whose type does
// not come back as it was. Errors: no columns, a type it cannot parse.
func ExportColumns(cols []Column) (string, []Column, error) {
	if len(cols) == 0 {
		return "", nil, errors.New("snapshot: no columns to export: pass the table's columns (describe)")
	}
	out := make([]Column, len(cols))
	items := make([]string, len(cols))
	for i, c := range cols {
		t, err := parseType(c.Type)
		if err != nil {
			return "", nil, fmt.Errorf("snapshot: column %s: %w", duck.Ident(c.Name), err)
		}
		name := duck.Ident(c.Name)
		enc, _ := t.encoded()
		out[i] = Column{Name: c.Name, Type: c.Type}
		items[i] = name
		if back := enc.readBack().String(); back != t.String() {
			out[i].Parquet = back
			out[i].Encoding = strings.Join(t.hows(nil), ", ") + "; " + restoreColumn(name, t)
			if x := encodeExpr(name, t, 1); x != name {
				items[i] = x + " AS " + name
			}
		}
	}
	return strings.Join(items, ", "), out, nil
}

// RestoreList is the SELECT list over read_parquet of a table's Parquet
// file that gives back the table's columns with their types: each column's
// restoring expression (Encoding) or the column itself; "*" when no column
// records an encoding (also for versions written before encodings were).
func RestoreList(cols []Column) string {
	items := make([]string, len(cols))
	encoded := false
	for i, c := range cols {
		items[i] = duck.Ident(c.Name)
		if _, expr, ok := strings.Cut(c.Encoding, "; "); ok {
			items[i], encoded = expr+" AS "+items[i], true
		}
	}
	if !encoded {
		return "*"
	}
	return strings.Join(items, ", ")
}
