package model

import (
	"fmt"
	"path"
	"strings"
)

// StagingRoot is the object-store prefix of every staged payload.
const StagingRoot = "staging/"

// StagingPrefix is the object-store prefix under which the payloads of
// request requestID to model m are staged: staging/<m>/<requestID>/. A
// request may read, and the server deletes, only the objects under its own
// prefix.
func StagingPrefix(m, requestID string) string {
	return StagingRoot + m + "/" + requestID + "/"
}

// CheckStagedKey checks that key, a payload reference of request
// requestID to model m, names an object under StagingPrefix(m, requestID):
// a clean key (no '.', '..' or empty segments) with a file name after the
// prefix. The error wraps ErrInvalid and says which prefix is expected.
func CheckStagedKey(m, requestID, key string) error {
	prefix := StagingPrefix(m, requestID)
	rest, under := strings.CutPrefix(key, prefix)
	if !under || rest == "" || path.Clean(key) != key || ValidateID(m) != nil || ValidateRequestID(requestID) != nil {
		if len(key) > 100 {
			key = key[:100] + "…"
		}
		return fmt.Errorf("%w: payload %q is not staged for this request: a request may use only objects under %s ('teactl append' stages files there)", ErrInvalid, key, prefix)
	}
	return nil
}

// ParseStagedKey returns the model and request id of a staged payload key
// staging/<model>/<request_id>/<file…>; ok is false for any other key.
func ParseStagedKey(key string) (m, requestID string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(key, StagingRoot), "/", 3)
	if !strings.HasPrefix(key, StagingRoot) || len(parts) != 3 {
		return "", "", false
	}
	if CheckStagedKey(parts[0], parts[1], key) != nil {
		return "", "", false
	}
	return parts[0], parts[1], true
}
