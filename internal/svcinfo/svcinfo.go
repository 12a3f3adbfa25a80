// Package svcinfo makes every teatree process (dispatcher, db-manager,
// reader) discoverable as a NATS micro service and answers what teactl
// ping and teactl info show: kind, id, version, uptime, models, stream
// position and lag, memory and the last error.
//
// Each process registers a micro service (Add, or AddEndpoint on a
// service it already has) with an endpoint named "info" on the subject
// teatree.info.<service id>; a request to it (any payload) is answered
// with one Info as JSON. Discovery uses micro's own subjects: $SRV.PING
// and $SRV.INFO (Gather).
package svcinfo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Service names, one per kind of process.
const (
	Dispatcher = "teatree-dispatcher"
	DBManager  = "teatree-dbmanager"
	Reader     = "teatree-reader"
)

// EndpointName is the name of the info endpoint of every teatree service;
// SubjectPrefix + the service id is its subject.
const (
	EndpointName  = "info"
	SubjectPrefix = "teatree.info."
)

// Info is what one process reports. Times are UTC, memory in bytes.
type Info struct {
	Kind     string            `json:"kind"` // the service name, e.g. teatree-dbmanager
	ID       string            `json:"id"`   // the micro service instance id
	Host     string            `json:"host"`
	PID      int               `json:"pid"`
	Version  string            `json:"version"` // the teatree build version (Version)
	Started  time.Time         `json:"started"`
	Metadata map[string]string `json:"metadata,omitempty"` // e.g. model, role
	// Models served: the db-manager's one model, the reader's open models.
	Models []string `json:"models,omitempty"`
	// Versions open per model (a reader).
	Versions map[string]int64 `json:"versions,omitempty"`
	// Position is the last applied stream sequence of a db-manager (0:
	// none, or not a db-manager); Lag the requests its consumer has not
	// delivered yet (JetStream's num_pending), nil when unknown.
	Position uint64  `json:"position,omitempty"`
	Lag      *uint64 `json:"lag,omitempty"`
	// InFlight is the number of requests being handled (a reader's queries).
	InFlight int64  `json:"in_flight,omitempty"`
	Memory   Memory `json:"memory"`
	// LastError is the last failed request or retried step, nil if none.
	LastError *LastError `json:"last_error,omitempty"`
}

// Memory is a process's memory use in bytes: the Go runtime's heap in use
// and the memory it obtained from the OS (runtime.MemStats HeapAlloc and
// Sys), and DuckDB's own buffers (sum of duckdb_memory().memory_usage_bytes)
// where the process has a DuckDB database open.
type Memory struct {
	GoHeap int64 `json:"go_heap"`
	GoSys  int64 `json:"go_sys"`
	DuckDB int64 `json:"duckdb,omitempty"`
}

// Total is GoSys + DuckDB: DuckDB allocates outside the Go heap.
func (m Memory) Total() int64 { return m.GoSys + m.DuckDB }

// LastError is the text and time of an error.
type LastError struct {
	Error string    `json:"error"`
	Time  time.Time `json:"time"`
}

// ErrorLog keeps the last error recorded; the zero value is ready and
// safe for concurrent use.
type ErrorLog struct {
	mu   sync.Mutex
	last *LastError
}

// Record makes err the last error; nil is ignored.
func (l *ErrorLog) Record(err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	l.last = &LastError{Error: err.Error(), Time: time.Now().UTC()}
	l.mu.Unlock()
}

// Last returns a copy of the last error, nil if none was recorded.
func (l *ErrorLog) Last() *LastError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		return nil
	}
	c := *l.last
	return &c
}

// Version is the teatree build version as semver (micro requires it):
// the main module's version without its "v" (a tagged or pseudo-version
// build), else "0.0.0-dev" plus "+<vcs revision, 12 hex>" when the build
// recorded one.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "0.0.0-dev"
	}
	if v := strings.TrimPrefix(bi.Main.Version, "v"); v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "0.0.0-dev+" + s.Value[:12]
		}
	}
	return "0.0.0-dev"
}

// Add registers the micro service name (Dispatcher, DBManager, …) on nc
// with the build Version, description and metadata, and its info
// endpoint answering with report's Info (AddEndpoint). The caller stops
// the service (Stop) when it shuts down.
func Add(nc *nats.Conn, name, description string, metadata map[string]string, report func(context.Context) Info) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{Name: name, Version: Version(), Description: description, Metadata: metadata})
	if err != nil {
		return nil, fmt.Errorf("svcinfo: add service %s: %w", name, err)
	}
	if err := AddEndpoint(svc, report); err != nil {
		svc.Stop()
		return nil, err
	}
	return svc, nil
}

// ReportTimeout bounds what report may spend (e.g. asking JetStream for a
// consumer's num_pending) before the info endpoint answers.
const ReportTimeout = 500 * time.Millisecond

// AddEndpoint adds the info endpoint to svc: each request is answered
// with report's Info, its Kind, ID, Version, Started, Metadata, Host, PID
// and Go memory filled in here. report gets a context bounded by
// ReportTimeout.
func AddEndpoint(svc micro.Service, report func(context.Context) Info) error {
	id := svc.Info().ID
	host, _ := os.Hostname()
	pid := os.Getpid()
	err := svc.AddEndpoint(EndpointName, micro.HandlerFunc(func(req micro.Request) {
		ctx, cancel := context.WithTimeout(context.Background(), ReportTimeout)
		defer cancel()
		in := report(ctx)
		si := svc.Info()
		st := svc.Stats()
		in.Kind, in.ID, in.Version, in.Started, in.Metadata = si.Name, si.ID, si.Version, st.Started.UTC(), si.Metadata
		in.Host, in.PID = host, pid
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		in.Memory.GoHeap, in.Memory.GoSys = int64(ms.HeapAlloc), int64(ms.Sys)
		_ = req.RespondJSON(in)
	}), micro.WithEndpointSubject(SubjectPrefix+id), micro.WithEndpointQueueGroupDisabled())
	if err != nil {
		return fmt.Errorf("svcinfo: add endpoint: %w", err)
	}
	return nil
}

// Decode decodes one info reply. It returns an error for anything but a
// JSON object with a kind and an id.
func Decode(data []byte) (Info, error) {
	var in Info
	if err := json.Unmarshal(data, &in); err != nil {
		return Info{}, fmt.Errorf("svcinfo: info reply: %w", err)
	}
	if in.Kind == "" || in.ID == "" {
		return Info{}, errors.New("svcinfo: info reply without kind or id")
	}
	return in, nil
}

// Pinged is one service instance that answered $SRV.PING, with the round
// trip of its answer.
type Pinged struct {
	micro.ServiceIdentity
	RTT time.Duration `json:"rtt_ns"`
}

// Ping sends $SRV.PING on nc and returns every instance that answers
// within wait, in the order of their answers. Answers that are not a
// micro ping are skipped.
func Ping(nc *nats.Conn, wait time.Duration) ([]Pinged, error) {
	var out []Pinged
	start := time.Now()
	err := collect(nc, "$SRV.PING", wait, func(data []byte) {
		var p micro.Ping
		if json.Unmarshal(data, &p) == nil && p.Name != "" && p.ID != "" {
			out = append(out, Pinged{ServiceIdentity: p.ServiceIdentity, RTT: time.Since(start)})
		}
	})
	return out, err
}

// Gather discovers every micro service with $SRV.INFO (collecting answers
// for half of wait) and asks the info endpoint of each, all within wait: a service that does not answer in
// time is absent; one without an info endpoint (not teatree's) or whose
// info does not come in time is reported with what $SRV.INFO told (kind,
// id, version, metadata).
func Gather(nc *nats.Conn, wait time.Duration) ([]Info, error) {
	deadline := time.Now().Add(wait)
	var found []micro.Info
	err := collect(nc, "$SRV.INFO", wait/2, func(data []byte) {
		var mi micro.Info
		if json.Unmarshal(data, &mi) == nil && mi.Name != "" && mi.ID != "" {
			found = append(found, mi)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]Info, len(found))
	var wg sync.WaitGroup
	for i, mi := range found {
		out[i] = Info{Kind: mi.Name, ID: mi.ID, Version: mi.Version, Metadata: mi.Metadata}
		subj := ""
		for _, ep := range mi.Endpoints {
			if ep.Name == EndpointName {
				subj = ep.Subject
			}
		}
		if subj == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply, err := nc.Request(subj, nil, time.Until(deadline))
			if err != nil {
				return
			}
			if in, err := Decode(reply.Data); err == nil {
				out[i] = in
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// collect publishes an empty request on subj and calls f with each reply
// that comes within wait.
func collect(nc *nats.Conn, subj string, wait time.Duration, f func([]byte)) error {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("svcinfo: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		return fmt.Errorf("svcinfo: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return nil // the wait is over
		}
		f(msg.Data)
	}
}
