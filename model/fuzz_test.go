package model

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
)

// FuzzDecodeRequest: the request decoder never panics, every refusal wraps
// ErrInvalid with a bounded message, and an accepted request has a valid
// request id and model id, a function, args that are a JSON object, fits
// the size limit, and decodes to the same request after a JSON round trip.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"request_id":"0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11","model":"shop","function":"append","args":{"table":"t","rows":[{"id":1}]},"submitted":"2024-05-01T12:00:00Z"}`))
	f.Add([]byte(`{"request_id":"r","model":"shop","function":"refresh","args":{"table":"d","query":"SELECT 1"}}`))
	f.Add([]byte(`{"request_id":"r","model":"shop.>","function":"append","args":{}}`))
	f.Add([]byte(`{"request_id":"r","model":"shop","function":"append","args":[]}`))
	f.Add([]byte(`{"request_id":"r","model":"shop","function":"append","args":{}} {}`))
	f.Add([]byte(`{"REQUEST_ID":"r","Model":"shop","function":"x","args":{}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if refused(t, data, err, 2000) {
			return
		}
		if len(data) > MaxRequestBytes {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if ValidateRequestID(r.ID) != nil || ValidateID(r.Model) != nil || r.Function == "" {
			t.Fatalf("%q: accepted %+v", data, r)
		}
		if a := strings.TrimSpace(string(r.Args)); a == "" || a[0] != '{' || !json.Valid(r.Args) {
			t.Fatalf("%q: args %q are not a JSON object", data, r.Args)
		}
		again, err := json.Marshal(r)
		if err != nil || len(again) > MaxRequestBytes {
			return // e.g. a submitted time beyond year 9999
		}
		r2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("%q: re-encoded %s refused: %v", data, again, err)
		}
		if r2.ID != r.ID || r2.Model != r.Model || r2.Function != r.Function || !r2.Submitted.Equal(r.Submitted) {
			t.Fatalf("round trip changed %+v to %+v", r, r2)
		}
	})
}

// FuzzValidateID: what the model-id validator accepts is a DNS label, so
// it is safe as a NATS subject token (no '.', '*', '>' or white space),
// an S3 key part and a Kubernetes name; refusals wrap ErrInvalid with a
// short message however long the input.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"shop", "a", "a-b", "Shop", "a.b", "*", ">", "a b", "café", "-a", "a-", strings.Repeat("a", 63), strings.Repeat("a", 64), "\x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID(id)
		if refused(t, id, err, 400) {
			return
		}
		if len(id) == 0 || len(id) > MaxIDLen {
			t.Fatalf("accepted %q of length %d", id, len(id))
		}
		if id[0] == '-' || id[len(id)-1] == '-' {
			t.Fatalf("accepted %q: starts or ends with '-'", id)
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') || unicode.IsSpace(r) {
				t.Fatalf("accepted %q with %q", id, r)
			}
		}
		if strings.ContainsAny(id, ".*> \t\r\n/") {
			t.Fatalf("accepted %q: not a NATS subject token", id)
		}
	})
}

// FuzzValidateRequestID: an accepted request id is 1 to 128 letters,
// digits, '.', '_', ':' and '-', safe in a Nats-Msg-Id header and an
// object key; refusals wrap ErrInvalid with a short message.
func FuzzValidateRequestID(f *testing.F) {
	for _, s := range []string{"0190d0c8-7f4e-7cc0-9a3c-2b8c1f0e6a11", "01J2ZK8M3V4W5X6Y7Z8A9B0C1D", "a b", "a/b", "ü", "", strings.Repeat("r", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateRequestID(id)
		if refused(t, id, err, 700) {
			return
		}
		if len(id) == 0 || len(id) > MaxRequestIDLen {
			t.Fatalf("accepted %q of length %d", id, len(id))
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)) {
				t.Fatalf("accepted %q with %q", id, r)
			}
		}
	})
}

// refused reports whether err refused input, failing t unless the refusal
// wraps ErrInvalid with a message of at most maxLen bytes.
func refused[T string | []byte](t *testing.T, input T, err error, maxLen int) bool {
	t.Helper()
	if err == nil {
		return false
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("%q: %v does not wrap ErrInvalid", input, err)
	}
	if len(err.Error()) > maxLen {
		t.Fatalf("%q: error is %d bytes long", input, len(err.Error()))
	}
	return true
}
