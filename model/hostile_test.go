package model

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// envelope is a well-formed request with one field replaced: the named
// fields are spliced in as raw JSON text.
func envelope(id, mdl, function, args string) []byte {
	return []byte(`{"request_id":` + id + `,"model":` + mdl + `,"function":` + function + `,"args":` + args + `}`)
}

func TestValidateIDRefuses(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"", "model id is empty"},
		{"Shop", "not a DNS label"},
		{"SHOP", "not a DNS label"},
		{"a.b", "not a DNS label"},
		{".", "not a DNS label"},
		{"..", "not a DNS label"},
		{"*", "not a DNS label"},
		{"a*", "not a DNS label"},
		{">", "not a DNS label"},
		{"a>", "not a DNS label"},
		{"teatree.req.>", "not a DNS label"},
		{"a b", "not a DNS label"},
		{" a", "not a DNS label"},
		{"a ", "not a DNS label"},
		{"a\tb", "not a DNS label"},
		{"a\nb", "not a DNS label"},
		{"a\x00", "not a DNS label"},
		{"-a", "not a DNS label"},
		{"a-", "not a DNS label"},
		{"-", "not a DNS label"},
		{"a_b", "not a DNS label"},
		{"a/b", "not a DNS label"},
		{"../etc", "not a DNS label"},
		{"a;drop", "not a DNS label"},
		{"a'b", "not a DNS label"},
		{"café", "not a DNS label"},
		{"ünïcode", "not a DNS label"},
		{"ａ", "not a DNS label"},       // full-width a
		{"a\u200b", "not a DNS label"}, // zero-width space
		{"\u0430", "not a DNS label"},  // Cyrillic a
		{"🙂", "not a DNS label"},
		{"\xff", "not a DNS label"},
		{strings.Repeat("a", 64), "64 characters long: at most 63"},
		{strings.Repeat("a", 1<<20), "1048576 characters long"},
	} {
		err := ValidateID(tc.id)
		name := fmt.Sprintf("ValidateID(%.40q)", tc.id)
		checkInvalid(t, name, err, tc.want)
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("%s: error is %d bytes long", name, len(err.Error()))
		}
	}
	for _, ok := range []string{"a", "0", "a-b", "a--b", "0a", "xn--bcher-kva", strings.Repeat("a", 63)} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%q) = %v", ok, err)
		}
	}
}

func TestValidateRequestIDRefuses(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"", "request_id is empty"},
		{strings.Repeat("r", MaxRequestIDLen+1), "129 characters long"},
		{strings.Repeat("r", 1<<20), "at most 128"},
		{"a b", "may hold only"},
		{"a/b", "may hold only"},
		{"a*", "may hold only"},
		{"a>", "may hold only"},
		{"a\x00", "may hold only"},
		{"a\n", "may hold only"},
		{"a'); DROP TABLE t; --", "may hold only"},
		{`a"b`, "may hold only"},
		{`a\b`, "may hold only"},
		{"ülid", "may hold only"},
		{"\xff", "may hold only"},
	} {
		err := ValidateRequestID(tc.id)
		name := fmt.Sprintf("ValidateRequestID(%.40q)", tc.id)
		checkInvalid(t, name, err, tc.want)
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: error is %d bytes long", name, len(err.Error()))
		}
	}
	for _, ok := range []string{"0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11", "01J2ZK8M3V4W5X6Y7Z8A9B0C1D", "a.b:c_d-e", strings.Repeat("r", 128)} {
		if err := ValidateRequestID(ok); err != nil {
			t.Errorf("ValidateRequestID(%q) = %v", ok, err)
		}
	}
}

func TestDecodeRequestRefuses(t *testing.T) {
	ok := envelope(`"r-1"`, `"shop"`, `"append"`, `{"table":"t","rows":[{"id":1}]}`)
	if _, err := DecodeRequest(ok); err != nil {
		t.Fatalf("the good envelope: %v", err)
	}
	over := envelope(`"r-1"`, `"shop"`, `"append"`, `{"table":"t","rows":[{"v":"`+strings.Repeat("x", MaxRequestBytes)+`"}]}`)
	for i, tc := range []struct {
		data []byte
		want string
	}{
		// Malformed JSON.
		{nil, "not a JSON object"},
		{[]byte(""), "not a JSON object"},
		{[]byte("   "), "not a JSON object"},
		{[]byte("{"), "not a JSON object"},
		{[]byte("}"), "not a JSON object"},
		{[]byte("[]"), "not a JSON object"},
		{[]byte(`"request"`), "not a JSON object"},
		{[]byte("42"), "not a JSON object"},
		{[]byte("null"), "request_id is empty"},
		{[]byte("{}"), "request_id is empty"},
		{[]byte("\xef\xbb\xbf" + string(ok)), "not a JSON object"},
		{[]byte("\x00" + string(ok)), "not a JSON object"},
		{ok[:len(ok)-1], "not a JSON object"},
		{[]byte(strings.Replace(string(ok), `"model"`, `model`, 1)), "not a JSON object"},
		{[]byte(strings.Replace(string(ok), `"shop"`, `'shop'`, 1)), "not a JSON object"},
		{[]byte(strings.Replace(string(ok), `}]}}`, `}]},}`, 1)), "not a JSON object"},
		{[]byte(string(ok) + string(ok)), "data after its JSON object"},
		{[]byte(string(ok) + " x"), "data after its JSON object"},
		{[]byte(string(ok) + "\x00"), "data after its JSON object"},
		// Payload over the limit.
		{over, "at most 1048576 are allowed; stage large data"},
		{[]byte(strings.Repeat(" ", MaxRequestBytes) + string(ok)), "at most 1048576"},
		// Unknown and mistyped fields.
		{[]byte(`{"request_id":"r","model":"shop","function":"append","args":{},"priority":1}`), `unknown field "priority"`},
		{[]byte(`{"request_id":"r","model":"shop","function":"append","args":{},"headers":{"Nats-Msg-Id":"x"}}`), `unknown field "headers"`},
		{envelope(`1`, `"shop"`, `"append"`, `{}`), "cannot unmarshal number"},
		{envelope(`null`, `"shop"`, `"append"`, `{}`), "request_id is empty"},
		{envelope(`["r"]`, `"shop"`, `"append"`, `{}`), "cannot unmarshal array"},
		{envelope(`"r"`, `{"id":"shop"}`, `"append"`, `{}`), "cannot unmarshal object"},
		{envelope(`"r"`, `true`, `"append"`, `{}`), "cannot unmarshal bool"},
		{envelope(`"r"`, `"shop"`, `7`, `{}`), "cannot unmarshal number"},
		{[]byte(`{"request_id":"r","model":"shop","function":"append","args":{},"submitted":"yesterday"}`), "not a JSON object"},
		{[]byte(`{"request_id":"r","model":"shop","function":"append","args":{},"submitted":12}`), "not a JSON object"},
		// args must be a JSON object.
		{[]byte(`{"request_id":"r","model":"shop","function":"append"}`), "args must be a JSON object"},
		{envelope(`"r"`, `"shop"`, `"append"`, `null`), "args must be a JSON object"},
		{envelope(`"r"`, `"shop"`, `"append"`, `"{}"`), "args must be a JSON object"},
		{envelope(`"r"`, `"shop"`, `"append"`, `[{}]`), "args must be a JSON object"},
		{envelope(`"r"`, `"shop"`, `"append"`, `1`), "args must be a JSON object"},
		{envelope(`"r"`, `"shop"`, `"append"`, `{"a":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`), "not a JSON object"},
		// The function.
		{envelope(`"r"`, `"shop"`, `""`, `{}`), "names no function"},
		{[]byte(`{"request_id":"r","model":"shop","args":{}}`), "names no function"},
		// Request ids.
		{envelope(`""`, `"shop"`, `"append"`, `{}`), "request_id is empty"},
		{envelope(`"a b"`, `"shop"`, `"append"`, `{}`), "may hold only"},
		{envelope(`"a\u0000"`, `"shop"`, `"append"`, `{}`), "may hold only"},
		{envelope(`"x'); DROP TABLE t; --"`, `"shop"`, `"append"`, `{}`), "may hold only"},
		{envelope(`"`+strings.Repeat("r", 200)+`"`, `"shop"`, `"append"`, `{}`), "at most 128"},
		// Model ids: ., *, >, spaces, unicode, case, NUL, invalid UTF-8.
		{envelope(`"r"`, `""`, `"append"`, `{}`), "model id is empty"},
		{envelope(`"r"`, `"shop.eu"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"*"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `">"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"shop.>"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"my shop"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"Shop"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"boutique-é"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"\u0073hop\u0000"`, `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, "\"sh\xffop\"", `"append"`, `{}`), "not a DNS label"},
		{envelope(`"r"`, `"`+strings.Repeat("m", 64)+`"`, `"append"`, `{}`), "at most 63"},
	} {
		r, err := DecodeRequest(tc.data)
		name := fmt.Sprintf("%d DecodeRequest(%.60q)", i, tc.data)
		checkInvalid(t, name, err, tc.want)
		if err != nil && (r.ID != "" || r.Model != "" || r.Args != nil) {
			t.Errorf("%s: returned %+v with the error", name, r)
		}
		if err != nil && len(err.Error()) > 1000 {
			t.Errorf("%s: error is %d bytes long", name, len(err.Error()))
		}
	}
}

func checkInvalid(t *testing.T, name string, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: accepted, want an error containing %q", name, want)
	case !errors.Is(err, ErrInvalid):
		t.Errorf("%s: error %v does not wrap ErrInvalid", name, err)
	case !strings.Contains(err.Error(), want):
		t.Errorf("%s: error %q does not contain %q", name, err, want)
	}
}

func TestDecodeRequestRefusesDuplicateAndMiscasedKeys(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{`{"request_id":"r1","model":"shop","model":"evil","function":"append","args":{}}`, `key "model" twice`},
		{`{"request_id":"r1","Model":"shop","function":"append","args":{}}`, `unknown field "Model"`},
		{`{"REQUEST_ID":"r1","model":"shop","function":"append","args":{}}`, `unknown field "REQUEST_ID"`},
		{`{"request_id":"r1","model":"shop","function":"append","args":{},"args":{"table":"x"}}`, `key "args" twice`},
	} {
		_, err := DecodeRequest([]byte(tc.data))
		checkInvalid(t, tc.data, err, tc.want)
	}
}
