package model

import "testing"

// BenchmarkDecodeRequest decodes one request of scenario 1a (a one-row
// append) as the dispatcher and the db-manager do for every message.
func BenchmarkDecodeRequest(b *testing.B) {
	data := []byte(`{"request_id":"s1-12345","model":"small-1","function":"append","args":{"table":"t","rows":[{"id":12345,"v":"teabench row"}]}}`)
	for b.Loop() {
		if _, err := DecodeRequest(data); err != nil {
			b.Fatal(err)
		}
	}
}
