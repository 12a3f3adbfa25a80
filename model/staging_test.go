package model

import (
	"strings"
	"testing"
)

func TestStagedKeys(t *testing.T) {
	if got := StagingPrefix("m7", "r1"); got != "staging/m7/r1/" {
		t.Fatalf("StagingPrefix = %q", got)
	}
	for _, tc := range []struct {
		key, m, id string
		ok         bool
	}{
		{"staging/m7/r1/zipcodes.csv", "m7", "r1", true},
		{"staging/m7/r1/sub/f.csv", "m7", "r1", true},
		{"staging/m7/r1/", "", "", false},
		{"staging/m7/r1", "", "", false},
		{"staging/r1/zipcodes.csv", "", "", false}, // the old form: no model
		{"staging/M7/r1/f.csv", "", "", false},
		{"staging/m7/r 1/f.csv", "", "", false},
		{"staging/m7/../f.csv", "", "", false},
		{"staging/m7/r1/../r2/f.csv", "", "", false},
		{"staging/m7/r1//f.csv", "", "", false},
		{"models/m7/r1/f.csv", "", "", false},
	} {
		m, id, ok := ParseStagedKey(tc.key)
		if m != tc.m || id != tc.id || ok != tc.ok {
			t.Errorf("ParseStagedKey(%q) = %q, %q, %v; want %q, %q, %v", tc.key, m, id, ok, tc.m, tc.id, tc.ok)
		}
	}
	if err := CheckStagedKey("m7", "r1", "staging/m8/r1/f.csv"); err == nil || !strings.Contains(err.Error(), "staging/m7/r1/") {
		t.Errorf("another model's payload: %v", err)
	}
}

// FuzzStagedKeys: a key ParseStagedKey accepts is a clean key under the
// prefix of the model and request it names, and CheckStagedKey accepts it
// for exactly that request; a key CheckStagedKey accepts parses back to
// its model and request. Refusals wrap ErrInvalid.
func FuzzStagedKeys(f *testing.F) {
	for _, s := range [][3]string{
		{"m7", "r1", "staging/m7/r1/f.csv"}, {"m7", "r1", "staging/m8/r1/f.csv"}, {"m7", "..", "staging/m7/../f.csv"},
		{"m7", "r1", "staging/m7/r1/../../m8/r2/f.csv"}, {"a", ".", "staging/a/./x"}, {"m", "r", "staging/m/r/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, m, id, key string) {
		if pm, pid, ok := ParseStagedKey(key); ok {
			if !strings.HasPrefix(key, StagingPrefix(pm, pid)) || CheckStagedKey(pm, pid, key) != nil {
				t.Fatalf("ParseStagedKey(%q) = %q, %q: not under that request's prefix", key, pm, pid)
			}
			for _, seg := range strings.Split(key, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("ParseStagedKey accepted %q with segment %q", key, seg)
				}
			}
		}
		err := CheckStagedKey(m, id, key)
		if refused(t, key, err, 700+len(m)+len(id)) {
			return
		}
		if pm, pid, ok := ParseStagedKey(key); !ok || pm != m || pid != id {
			t.Fatalf("CheckStagedKey(%q, %q) accepted %q, which parses as %q, %q, %v", m, id, key, pm, pid, ok)
		}
	})
}
