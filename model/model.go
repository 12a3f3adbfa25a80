package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalid marks bad input: a malformed request, bad args, a bad
	// model id. The message says what was wrong.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound marks a model, version or request that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict marks a create of something that exists already, or a
	// write that would overwrite an immutable object with other content.
	ErrConflict = errors.New("conflict")
	// ErrStaleEpoch marks a write by a db-manager whose writer lease epoch
	// is older than the one recorded for the model: another writer took
	// over, and the caller must stop writing.
	ErrStaleEpoch = errors.New("stale writer epoch")
)

// MaxIDLen is the longest model id: a DNS label (RFC 1123) is at most 63
// characters.
const MaxIDLen = 63

var idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidateID reports whether id is a valid model id: a DNS label
// (RFC 1123), `[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?`, which is at once a valid
// NATS subject token, S3 key part and Kubernetes name. The error wraps
// ErrInvalid and says what to do.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: model id is empty: use lower-case letters, digits and '-'", ErrInvalid)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: model id %s is %d characters long: at most %d are allowed", ErrInvalid, Quote(id), len(id), MaxIDLen)
	}
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: model id %s is not a DNS label: use lower-case letters a-z, digits and '-', starting and ending with a letter or digit", ErrInvalid, Quote(id))
	}
	return nil
}

// MaxRequestBytes is the largest encoded request (1 MiB, the NATS default
// max_payload). Larger data is staged in the object store and referenced
// by a payload URI.
const MaxRequestBytes = 1 << 20

// Request is one function call submitted to a model. It travels as JSON on
// subject teatree.req.<model> with header Nats-Msg-Id set to ID.
type Request struct {
	// ID is chosen by the client (a UUIDv7 by default) so that a retry is
	// the same request: JetStream drops a duplicate within the dedupe
	// window and the db-manager skips an id it has applied already.
	ID string `json:"request_id"`
	// Model is the model id; it must match the subject's last token.
	Model string `json:"model"`
	// Function is the name of one of the functions in package functions.
	Function string `json:"function"`
	// Args are the function's arguments, a JSON object whose shape the
	// function's schema documents.
	Args json.RawMessage `json:"args"`
	// Submitted is the client's clock at submit time (informational).
	Submitted time.Time `json:"submitted,omitzero"`
}

// Digest identifies what a request asks for: the sha256 (hex) of its
// model, function and args, with the args re-encoded canonically (object
// keys sorted, insignificant white space dropped) so that a retry that
// spells the same args differently has the same digest. The id and the
// submit time are not part of it. Two requests with one id and different
// digests are different requests (see queue.Publish).
func (r Request) Digest() string {
	args := []byte(r.Args)
	var v any
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber()
	if dec.Decode(&v) == nil {
		if b, err := json.Marshal(v); err == nil {
			args = b
		}
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(r.Model), []byte(r.Function), args} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// MaxRequestIDLen is the longest accepted request id.
const MaxRequestIDLen = 128

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)

// ValidateRequestID reports whether id can serve as a request id: 1 to 128
// characters of letters, digits, '.', '_', ':' and '-'.
func ValidateRequestID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: request_id is empty", ErrInvalid)
	}
	if len(id) > MaxRequestIDLen {
		return fmt.Errorf("%w: request_id is %d characters long: at most %d are allowed", ErrInvalid, len(id), MaxRequestIDLen)
	}
	if !requestIDPattern.MatchString(id) {
		return fmt.Errorf("%w: request_id %s may hold only letters, digits, '.', '_', ':' and '-'", ErrInvalid, Quote(id))
	}
	return nil
}

// DecodeRequest decodes and checks the envelope of a request: size, JSON
// shape, request id, model id, a function name and args that are a JSON
// object. It does not check the args against the function; see
// functions.Validate. Errors wrap ErrInvalid.
func DecodeRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequestBytes {
		return r, fmt.Errorf("%w: request is %d bytes: at most %d are allowed; stage large data with 'teactl append' instead", ErrInvalid, len(data), MaxRequestBytes)
	}
	if err := checkKeys(data); err != nil {
		return Request{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: request is not a JSON object of the form {\"request_id\",\"model\",\"function\",\"args\"}: %w", ErrInvalid, Shorten(err))
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: request has data after its JSON object", ErrInvalid)
	}
	if err := ValidateRequestID(r.ID); err != nil {
		return Request{}, err
	}
	if err := ValidateID(r.Model); err != nil {
		return Request{}, err
	}
	if r.Function == "" {
		return Request{}, fmt.Errorf("%w: request %s names no function: see 'teactl functions'", ErrInvalid, r.ID)
	}
	if a := bytes.TrimSpace(r.Args); len(a) == 0 || a[0] != '{' {
		return Request{}, fmt.Errorf("%w: request %s: args must be a JSON object", ErrInvalid, r.ID)
	}
	return r, nil
}

// requestKeys are the keys of a request object, spelled exactly.
var requestKeys = map[string]bool{"request_id": true, "model": true, "function": true, "args": true, "submitted": true}

// checkKeys refuses a request object with a key twice or a key not
// spelled exactly: encoding/json matches keys regardless of case and keeps
// the last of two duplicates, so {"model":"a","model":"b"} would name b.
// Malformed JSON is left to the decoder, which says what is wrong. The
// tokens come from jsontext (the tokenizer of Go's encoding/json/v2),
// several times cheaper than encoding/json's Decoder.Token.
func checkKeys(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil
	}
	var seen []string // at most len(requestKeys)
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil
		}
		k := tok.String()
		switch {
		case slices.Contains(seen, k):
			return fmt.Errorf("%w: request has the key %s twice", ErrInvalid, Quote(k))
		case !requestKeys[k]:
			return fmt.Errorf("%w: unknown field %s in request: the fields are request_id, model, function, args and submitted", ErrInvalid, Quote(k))
		}
		seen = append(seen, k)
		if err := dec.SkipValue(); err != nil {
			return nil
		}
	}
	return nil
}

// Status is the state of a request.
type Status string

// Request statuses. Applied, failed, rejected and cancelled are final.
const (
	StatusQueued    Status = "queued"    // durably in the request stream
	StatusApplied   Status = "applied"   // applied; part of the named version
	StatusFailed    Status = "failed"    // the function returned an error; nothing of it was written
	StatusRejected  Status = "rejected"  // invalid before it reached the db-manager
	StatusCancelled Status = "cancelled" // cancelled (teactl cancel) before the db-manager applied it; nothing of it was written
)

// Final reports whether s is a final status.
func (s Status) Final() bool {
	return s == StatusApplied || s == StatusFailed || s == StatusRejected || s == StatusCancelled
}

// Notification announces the outcome of one request on subject
// teatree.notify.<model>. For applied requests Version is the first version
// that contains the request's effect; for failed and cancelled requests it
// is the version that recorded the outcome (0 when no version did: the
// batch changed nothing); rejected requests have Version 0.
type Notification struct {
	RequestID string    `json:"request_id"`
	Model     string    `json:"model"`
	Function  string    `json:"function"`
	Status    Status    `json:"status"`
	Version   int64     `json:"version"`
	Error     string    `json:"error,omitempty"`
	Seq       uint64    `json:"stream_seq,omitempty"` // sequence in TEATREE_REQUESTS
	Queued    time.Time `json:"queued,omitzero"`      // when the stream stored the request
	Applied   time.Time `json:"applied,omitzero"`     // when the DuckDB transaction committed
	Published time.Time `json:"published,omitzero"`   // when the version was published
}

// Lineage is where a version came from (teactl log, teactl show): its
// parent, the requests its range of the request stream holds, what made
// it, and what it read. It is in the version's manifest and in Postgres
// (model_version.lineage).
type Lineage struct {
	// Parent is the version this one was cut after (0 for a model's first
	// version): its state plus Requests is this version's.
	Parent int64 `json:"parent"`
	// ParentModel is the model of Parent when it is another model: the
	// first version of a fork (teactl model fork SRC DST) has parent
	// SRC@N; empty otherwise.
	ParentModel string `json:"parent_model,omitempty"`
	// Requests are the requests of the version's stream range, in stream
	// order, with their outcome: applied, failed, rejected or cancelled.
	Requests []LineageRequest `json:"requests"`
	// Build is the teatree build of the db-manager that cut the version
	// (semver, svcinfo.Version); DuckDB the DuckDB library version it ran.
	Build  string `json:"build"`
	DuckDB string `json:"duckdb"`
	// Modules are the digests (sha256 hex) of the modules the version's
	// applied requests used (WASM functions), sorted, each once.
	Modules []string `json:"modules,omitempty"`
	// Reads are the published versions of other models the version's
	// applied requests read (args.reads), with their root digests, each
	// once, sorted by model and version.
	Reads []ModelVersion `json:"reads,omitempty"`
}

// LineageRequest is one request of a version's lineage. Digest is
// Request.Digest (model, function and canonical args): two requests with
// one digest asked for the same thing.
type LineageRequest struct {
	ID       string `json:"request_id"`
	Function string `json:"function"`
	Digest   string `json:"digest,omitempty"` // empty for a request that could not be decoded
	Status   Status `json:"status"`
	Seq      uint64 `json:"stream_seq"`
}

// ModelVersion names a published version of a model; Root is its root
// digest (model_version.sha256) where known.
type ModelVersion struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	Root    string `json:"root,omitempty"`
}
