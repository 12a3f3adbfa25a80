package functions

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/teatree/teatree/model"
)

// maxErrorLen bounds a refusal's message however long the input: errors
// quote outside input through model.Quote and model.Shorten.
const maxErrorLen = 2000

// FuzzValidate feeds every function's Decode (through Lookup) arbitrary
// args. It must never panic; refusals wrap model.ErrInvalid with a
// bounded message. The schema `teactl functions` shows is the contract
// both ways: args it refuses are refused, and accepted args satisfy it,
// re-marshal from the typed args, and the re-marshaled args are accepted
// again (by Decode and by the schema).
func FuzzValidate(f *testing.F) {
	for _, fn := range All() {
		for _, ex := range schemaExamples(fn.Schema()) {
			f.Add(fn.Name(), []byte(ex))
		}
	}
	for _, tc := range badArgs {
		if len(tc.args) < 4096 {
			f.Add(tc.fn, []byte(tc.args))
		}
	}
	f.Add("nope", []byte(`{"table":"t"}`))
	f.Add("append", []byte(`{"table":"t","rows":[{"a":1e400,"b":-0.0,"c":"\ud800","d":[{"e":{}}]}]}`))
	f.Add("update", []byte(`{"table":"t","set":{"v":{"nested":[1,"x",null]}},"where":[{"column":"id","op":"in","value":[1,"2",true]}]}`))
	f.Add("refresh", []byte(`{"table":"d","query":"SELECT a, sum(b) OVER (PARTITION BY c) FROM t QUALIFY row_number() OVER () < 3"}`))
	f.Add("derive", []byte(`{"table":"d","query":"SELECT g AS k, date_trunc('month', d)::DATE, count(*), avg(x), min(x) FILTER (WHERE x > 0) FROM t AS f WHERE x IN (1, 2) GROUP BY k, 2"}`))
	f.Add("derive", []byte(`{"table":"d","query":"WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, t"}`))
	f.Add("sql", []byte(`{"sql":"CREATE TABLE x (a INTEGER DEFAULT 1, b VARCHAR)"}`))
	f.Add("create_table", []byte(`{"table":"t","columns":[{"name":"m","type":"MAP(VARCHAR, STRUCT(a INTEGER[3], b UNION(x INTEGER, y VARCHAR)))"}]}`))

	schemas := map[string]*jsonschema.Schema{}
	for _, fn := range All() {
		schemas[fn.Name()] = shownSchema(f, fn)
	}
	all := All()
	f.Fuzz(func(t *testing.T, name string, args []byte) {
		fn, err := Lookup(name)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("Lookup(%q): %v does not wrap ErrInvalid", name, err)
			}
			h := fnv.New32a()
			h.Write([]byte(name))
			fn = all[int(h.Sum32()%uint32(len(all)))]
		}
		c, err := fn.Decode(args)
		schemaErr := schemaValidate(schemas[fn.Name()], args)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("%s %q: error %v does not wrap ErrInvalid", fn.Name(), args, err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("%s %q: error is %d bytes long", fn.Name(), args, len(err.Error()))
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("%s %q: error %q is not one line", fn.Name(), args, err)
			}
			if !strings.HasPrefix(err.Error(), fn.Name()+": ") {
				t.Fatalf("%s %q: error %q does not start with the function's name", fn.Name(), args, err)
			}
			return
		}
		if schemaErr != nil {
			t.Fatalf("%s %q: Decode accepts args the shown schema refuses: %v", fn.Name(), args, schemaErr)
		}
		again, err := json.Marshal(decoded(c))
		if err != nil {
			t.Fatalf("%s %q: accepted args do not re-marshal: %v", fn.Name(), args, err)
		}
		if _, err := fn.Decode(again); err != nil {
			t.Fatalf("%s %q: re-marshaled %s refused: %v", fn.Name(), args, again, err)
		}
		if err := schemaValidate(schemas[fn.Name()], again); err != nil {
			t.Fatalf("%s %q: re-marshaled %s refused by the schema: %v", fn.Name(), args, again, err)
		}
	})
}

// FuzzArrowToParquet feeds the Arrow IPC converter arbitrary bytes: it
// must not panic, every failure about the content wraps errNotArrow with a
// bounded message, and no input takes long: each input gets its own
// directory (nothing is shared between inputs), and the converter bounds
// what a file's declared sizes can make it allocate or write.
func FuzzArrowToParquet(f *testing.F) {
	f.Add(arrowBytes(f, true, arrowRecord(f, 1, 2)))
	f.Add(arrowBytes(f, false, arrowRecord(f, 1), arrowRecord(f, 2, 3)))
	f.Add(arrowBytes(f, false))
	f.Add([]byte("ARROW1\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		err := convertBytes(t, data, 30*time.Second)
		if err != nil {
			if !errors.Is(err, errNotArrow) {
				t.Fatalf("%q: error %v does not wrap errNotArrow", data, err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("%q: error is %d bytes long", data, len(err.Error()))
			}
		}
	})
}

// FuzzValidateSelect: teactl query's check never panics, refusals wrap
// model.ErrInvalid, and what it accepts parses as exactly one statement.
func FuzzValidateSelect(f *testing.F) {
	for _, q := range []string{"SELECT 1", "FROM t", "SELECT 1; SELECT 2", "DELETE FROM t", "WITH a AS (SELECT 1) SELECT * FROM a"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		err := ValidateSelect(q)
		if err != nil && !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("%q: %v is not an ErrInvalid", q, err)
		}
	})
}

// FuzzCoerce feeds the inline-value rules arbitrary JSON values for columns
// of many types: they never panic, a refusal is a coerceError with a
// bounded message, and what they accept is what the column can hold
// exactly (an integer in range, a DECIMAL equal to the number given, a
// boolean only from true or false).
func FuzzCoerce(f *testing.F) {
	types := []string{"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
		"DECIMAL(5,2)", "DECIMAL(38,10)", "DECIMAL(3,0)", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "DATE", "TIMESTAMP WITH TIME ZONE", "JSON", "VARINT",
		"INTEGER[]", "INTEGER[2]", "DATE[][]", `STRUCT(a INTEGER, "b c" VARCHAR[], "x""y" DECIMAL(4,1))`, "MAP(VARCHAR, DECIMAL(5,2))", "UNION(a INTEGER, b VARCHAR)"}
	for i, v := range []string{"true", "1", "-1.5e3", `"42"`, `" 42 "`, "1e999999999", "0e-999999999", "123.45", `"2024-01-01"`, "[1,2]", `{"a":1,"b c":["x"],"x\"y":1.5}`, `{"k":1.25}`, "null", "340282366920938463463374607431768211456", "-9223372036854775809"} {
		f.Add(uint8(i), []byte(v))
	}
	f.Fuzz(func(t *testing.T, pick uint8, value []byte) {
		typ := types[int(pick)%len(types)]
		v, err := decodeValue(value)
		if err != nil {
			return
		}
		got, err := coerce(typ, v)
		if err != nil {
			var ce coerceError
			if !errors.As(err, &ce) {
				t.Fatalf("%s %q: %v is not a coerceError", typ, value, err)
			}
			if len(err.Error()) > maxErrorLen {
				t.Fatalf("%s %q: error is %d bytes long", typ, value, len(err.Error()))
			}
			return
		}
		if v == nil {
			if got != nil {
				t.Fatalf("%s: null became %v", typ, got)
			}
			return
		}
		switch r, isInt := intRanges[typ]; {
		case isInt:
			x, ok := new(big.Int).SetString(fmt.Sprint(got), 10)
			if !ok || x.Cmp(r[0]) < 0 || x.Cmp(r[1]) > 0 {
				t.Fatalf("%s %q: accepted as %v", typ, value, got)
			}
		case typ == "BOOLEAN":
			if _, ok := got.(bool); !ok {
				t.Fatalf("BOOLEAN %q: accepted as %v", value, got)
			}
		case strings.HasPrefix(typ, "DECIMAL("):
			n := fmt.Sprint(v)
			if _, exp, _ := strings.Cut(strings.ToLower(n), "e"); len(exp) > 4 {
				return // big.Rat would build 10^exp
			}
			want, ok1 := new(big.Rat).SetString(n)
			have, ok2 := new(big.Rat).SetString(got.(string))
			if !ok1 || !ok2 || want.Cmp(have) != 0 {
				t.Fatalf("%s %q: accepted as %v", typ, value, got)
			}
		}
	})
}
