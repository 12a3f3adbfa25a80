package reader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
)

// Subject is the subject of model m's query endpoint.
func Subject(m string) string { return SubjectPrefix + m }

// SubjectPrefix starts every query subject; the endpoint listens on
// SubjectPrefix + "*".
const SubjectPrefix = "teatree.query."

// GroupSubject is the subject of group g's query endpoint: a query over
// the union of its members' latest versions (Server.serveGroup).
func GroupSubject(g string) string { return GroupSubjectPrefix + g }

// GroupSubjectPrefix starts every group query subject; the endpoint
// "group" listens on GroupSubjectPrefix + "*". It is not under
// SubjectPrefix: teatree.query.* is the model endpoint.
const GroupSubjectPrefix = "teatree.group."

// ServiceName is the NATS micro service name of every reader; QueueGroup
// is the queue group of its endpoint, so that one reader answers each
// request.
const (
	ServiceName = svcinfo.Reader
	QueueGroup  = "teatree-reader"
)

// Headers of the reply pages (reader → client).
const (
	HeaderModel   = "Teatree-Model"   // the model queried
	HeaderVersion = "Teatree-Version" // the version the whole query ran on
	HeaderPage    = "Teatree-Page"    // 1, 2, …
	HeaderRows    = "Teatree-Rows"    // rows in this page
	HeaderNext    = "Teatree-Next"    // subject to send "next" or "cancel" to; absent on the last page
	HeaderLast    = "Teatree-Last"    // "true" on the last page
	// A group query's pages carry these instead of model and version.
	HeaderGroup   = "Teatree-Group"   // the group queried
	HeaderMembers = "Teatree-Members" // JSON [{"model","version"}]: the members the result comes from
	HeaderFailed  = "Teatree-Failed"  // JSON [{"model","error"}]: members left out (partial only)
)

// Member is a member of a group and the version a group query used.
type Member struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
}

// MemberError is a member a partial group query left out, and why.
type MemberError struct {
	Model string `json:"model"`
	Error string `json:"error"`
}

// Control messages (client → the subject of HeaderNext).
const (
	ControlNext   = "next"
	ControlCancel = "cancel"
)

// Error codes of an error reply (micro's Nats-Service-Error-Code header,
// with Nats-Service-Error the message), HTTP-like.
const (
	CodeInvalid     = "400" // a bad request or SQL: model.ErrInvalid
	CodeNotFound    = "404" // no such model or version: model.ErrNotFound
	CodeTimeout     = "408" // the time limit: ErrLimit
	CodeTooLarge    = "413" // the row or byte limit: ErrLimit
	CodeUnavailable = "503" // the reader cannot serve it now (object store, Postgres, shutting down)
	CodeInternal    = "500"
)

// ErrLimit is wrapped by the errors of a query that exceeded one of the
// reader's limits (rows, bytes, time).
var ErrLimit = errors.New("query limit exceeded")

// ErrNoArrow is Run's error in a binary built without the duckdb_arrow
// build tag, which duckdb-go's Arrow interface needs (duck.ErrNoArrow).
var ErrNoArrow = duck.ErrNoArrow

// ErrNoReader is returned by Query when no reader answers on the model's
// subject (NATS "no responders") or none answers in time.
var ErrNoReader = errors.New("no reader answers")

// Request is a query request, the JSON body of a message on
// teatree.query.<model>. Limits lower the reader's for this query (0: the
// reader's; a higher value than the reader's is the reader's).
type Request struct {
	SQL       string `json:"sql"`                  // one SELECT (functions.ValidateSelect)
	Version   int64  `json:"version,omitempty"`    // 0: the latest
	MaxRows   int64  `json:"max_rows,omitempty"`   // rows
	MaxBytes  int64  `json:"max_bytes,omitempty"`  // bytes of Arrow IPC sent
	TimeoutMS int64  `json:"timeout_ms,omitempty"` // milliseconds
	// Render, when set to table, csv or json, makes the reader return one
	// VARCHAR column per result column (table, csv) or one JSON object per
	// row (json), rendered by DuckDB exactly as teactl query prints them
	// from a local snapshot (RenderSQL).
	Render string `json:"render,omitempty"`
	// Partial, for a group query, leaves out the members that fail
	// (listed in HeaderFailed) instead of failing the query; it fails
	// still when every member does.
	Partial bool `json:"partial,omitempty"`
}

// MaxRequestBytes bounds a request message.
const MaxRequestBytes = functions.MaxSQLLen + 4096

// DecodeRequest decodes and checks a query request (outside input): JSON
// with no unknown fields, a single SELECT, non-negative numbers, a known
// render. Errors wrap model.ErrInvalid.
func DecodeRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequestBytes {
		return r, fmt.Errorf("%w: query request of %d bytes: at most %d", model.ErrInvalid, len(data), MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: query request is not a JSON object of the form {\"sql\",\"version\",…}: %w", model.ErrInvalid, model.Shorten(err))
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: query request has data after its JSON object", model.ErrInvalid)
	}
	switch {
	case r.Version < 0:
		return r, fmt.Errorf("%w: query request: version %d: use a positive version, or 0 for the latest", model.ErrInvalid, r.Version)
	case r.MaxRows < 0 || r.MaxBytes < 0 || r.TimeoutMS < 0:
		return r, fmt.Errorf("%w: query request: limits must not be negative", model.ErrInvalid)
	}
	switch r.Render {
	case "", "table", "csv", "json":
	default:
		return r, fmt.Errorf("%w: query request: render %q: use table, csv or json", model.ErrInvalid, r.Render)
	}
	if err := functions.ValidateSelect(r.SQL); err != nil {
		return r, err
	}
	return r, nil
}

// timeout is the request's time limit, d when it sets none or a longer one.
func (r Request) timeout(d time.Duration) time.Duration {
	if r.TimeoutMS > 0 && time.Duration(r.TimeoutMS)*time.Millisecond < d {
		return time.Duration(r.TimeoutMS) * time.Millisecond
	}
	return d
}

// lower returns the request's limit v when it is set and below def.
func lower(v, def int64) int64 {
	if v > 0 && v < def {
		return v
	}
	return def
}

// encode is the JSON body of r.
func (r Request) encode() ([]byte, error) { return json.Marshal(r) }
