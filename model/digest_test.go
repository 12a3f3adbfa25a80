package model

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestDigest: a retry that spells the same args differently (key order,
// white space) is the same request; another model, function or value is
// not. The id and the submit time are not part of what a request asks for.
func TestDigest(t *testing.T) {
	base := Request{ID: "a", Model: "m", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"id":1,"v":"x"}]}`)}
	same := []Request{
		{ID: "b", Model: "m", Function: "append", Args: json.RawMessage(` { "rows" : [ {"v":"x","id":1} ], "table":"t" } `)},
	}
	other := []Request{
		{ID: "a", Model: "n", Function: "append", Args: base.Args},
		{ID: "a", Model: "m", Function: "upsert", Args: base.Args},
		{ID: "a", Model: "m", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"id":2,"v":"x"}]}`)},
		{ID: "a", Model: "m", Function: "append", Args: json.RawMessage(`{"table":"t","rows":[{"id":1,"v":"x"}],"create":false}`)},
		// The parts are length-prefixed: moving a character across them changes the digest.
		{ID: "a", Model: "ma", Function: "ppend", Args: base.Args},
	}
	for _, r := range same {
		if r.Digest() != base.Digest() {
			t.Errorf("%s %s %s: digest differs from the same request spelled otherwise", r.Model, r.Function, r.Args)
		}
	}
	for _, r := range other {
		if r.Digest() == base.Digest() {
			t.Errorf("%s %s %s: same digest as a different request", r.Model, r.Function, r.Args)
		}
	}
}

// FuzzDigest: any args (outside input) have a digest, the same for their
// compacted spelling.
func FuzzDigest(f *testing.F) {
	f.Add([]byte(`{"table":"t","rows":[{"id":1}]}`))
	f.Add([]byte(`{"a":1e400,"b":[null,true,"\u00e9"]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, args []byte) {
		r := Request{Model: "m", Function: "f", Args: args}
		d := r.Digest()
		if len(d) != 64 {
			t.Fatalf("digest %q", d)
		}
		var buf bytes.Buffer
		if json.Compact(&buf, args) == nil {
			r.Args = buf.Bytes()
			if r.Digest() != d {
				t.Errorf("compacting %q changed the digest", args)
			}
		}
	})
}
