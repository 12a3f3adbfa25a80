package model

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

// TestDecodeRequestQuotesBoundedExcerpts: every refusal that quotes a part
// of the request (a key, a value, a literal the JSON decoder echoes)
// quotes a bounded, escaped excerpt, however long and wild that part is.
func TestDecodeRequestQuotesBoundedExcerpts(t *testing.T) {
	long := strings.Repeat("m\x01\xb0", 10000)
	longJSON := strings.Repeat(`m\u0001`, 10000)
	digits := strings.Repeat("9", 20000)
	for _, data := range []string{
		`{"` + longJSON + `":1}`,                                   // unknown key (the fuzzer's find)
		`{"request_id":"r","request_id":"r","` + longJSON + `":1}`, // duplicate key
		`{"request_id":` + digits + `,"model":"m","function":"f","args":{}}`,
		`{"request_id":"r","model":"m","function":"f","args":{},"submitted":"` + longJSON + `"}`,
		`{"request_id":"r","model":"` + longJSON + `","function":"f","args":{}}`,
		`{"request_id":"r","model":"a\u0001b","function":"f","args":{}}`,
		`{"request_id":"` + longJSON + `","model":"m","function":"f","args":{}}`,
		`{"request_id":"r\u0001` + strings.Repeat("x", 100) + `","model":"m","function":"f","args":{}}`,
		`{"request_id":"r","model":"m","function":"f","args":{}} ` + digits,
	} {
		_, err := DecodeRequest([]byte(data))
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%.80q: %v, want ErrInvalid", data, err)
		}
		msg := err.Error()
		if len(msg) > 1000 {
			t.Errorf("%.80q: error is %d bytes long: %.200s", data, len(msg), msg)
		}
		if strings.ContainsFunc(msg, func(r rune) bool { return r == unicode.ReplacementChar || unicode.IsControl(r) }) {
			t.Errorf("%.80q: error holds an unescaped control character or invalid byte: %q", data, msg)
		}
	}
	if err := ValidateID(long); len(err.Error()) > 400 {
		t.Errorf("ValidateID: error is %d bytes long", len(err.Error()))
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", `"abc"`},
		{"a\nb\x00", `"a\nb\x00"`},
		{strings.Repeat("é", 40), `"` + strings.Repeat("é", 32) + `"… (80 bytes)`},
		{strings.Repeat("a", 63) + "é", `"` + strings.Repeat("a", 63) + `"… (65 bytes)`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := Excerpt("a\nb\x01\xffc\"", 100); got != `a b\x01\xffc"` {
		t.Errorf("Excerpt = %s", got)
	}
	if got := Excerpt(strings.Repeat("x", 600), MaxErrorText); len(got) != MaxErrorText+len("…") {
		t.Errorf("Excerpt is %d bytes", len(got))
	}
	if got := Excerpt(strings.Repeat("\x01\xff", 600), MaxErrorText); len(got) > MaxErrorText+len("…") {
		t.Errorf("Excerpt of control bytes is %d bytes", len(got))
	}
	base := errors.New(strings.Repeat("y", 2000))
	if err := Shorten(base); !errors.Is(err, base) || len(err.Error()) > MaxErrorText+3 {
		t.Errorf("Shorten: %d bytes, Is=%v", len(err.Error()), errors.Is(err, base))
	}
}
