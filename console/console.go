// Package console is teatree's read-only web console, served by the
// dispatcher (--console-addr): the models, one model with its versions,
// recent requests, plots and notification subscribers, and one request.
//
// Pages are server-rendered html/template with plots drawn as inline SVG on
// the server (no chart library, no framework); they work without
// JavaScript. A small embedded script (static/console.js) keeps a page
// live by polling: every 2 seconds it fetches the same URL and swaps the
// page's <main>. Everything is read from Postgres (package controldb) and
// from JetStream consumer and KV information; nothing is written.
//
// The console has no login: it listens on loopback by default, and in
// Kubernetes it sits behind a Service with a NetworkPolicy; put an
// authenticating proxy (e.g. oauth2-proxy) in front of it to open it to
// people (README, Observability).
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/telemetry"
)

//go:embed templates/*.html static/*
var assets embed.FS

// RecentRequests is how many requests the model page lists.
const RecentRequests = 50

// PollInterval is how often a page in a browser refreshes its content.
const PollInterval = 2 * time.Second

// Console serves the pages. Create it with New.
type Console struct {
	js   jetstream.JetStream
	ctl  *controldb.DB
	log  *slog.Logger
	tmpl *template.Template
}

// New returns a console reading from js and ctl.
func New(js jetstream.JetStream, ctl *controldb.DB, log *slog.Logger) *Console {
	funcs := template.FuncMap{
		"ago":   ago,
		"bytes": humanBytes,
		"ts":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"dur":   func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	}
	tmpl := template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html"))
	return &Console{js: js, ctl: ctl, log: log, tmpl: tmpl}
}

// Handler returns the console's routes:
//
//	GET /                  the models
//	GET /models/{model}    one model
//	GET /requests/{id}     one request
//	GET /static/…          the embedded stylesheet and script
//	GET /metrics           the process's metrics (Prometheus text format)
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.models)
	mux.HandleFunc("GET /models/{model}", c.model)
	mux.HandleFunc("GET /requests/{id}", c.request)
	mux.Handle("GET /static/", http.FileServerFS(assets))
	mux.Handle("GET /metrics", telemetry.Handler())
	return mux
}

// ModelRow is one line of the models page.
type ModelRow struct {
	controldb.Model
	Pending   int64 // requests the db-manager's consumer has not acknowledged; -1: no consumer yet
	Running   bool  // a db-manager holds the writer lease
	Holder    string
	LastError string
	ErrorAt   time.Time
}

// Models returns every model with its state.
func (c *Console) Models(ctx context.Context) ([]ModelRow, error) {
	ms, err := c.ctl.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	act, err := c.ctl.Activity(ctx)
	if err != nil {
		return nil, err
	}
	kv, err := c.js.KeyValue(ctx, queue.WritersBucket)
	if err != nil {
		return nil, fmt.Errorf("console: lease bucket: %w", err)
	}
	rows := make([]ModelRow, 0, len(ms))
	for _, m := range ms {
		r := ModelRow{Model: m, Pending: -1, LastError: act[m.ID].LastError, ErrorAt: act[m.ID].LastErrorAt}
		if n, err := c.pending(ctx, m.ID); err == nil {
			r.Pending = n
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, err
		}
		if e, err := kv.Get(ctx, m.ID); err == nil {
			r.Running, r.Holder = true, string(e.Value())
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("console: lease of %s: %w", m.ID, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// pending returns the requests of model m that its db-manager's consumer
// has not acknowledged (jetstream.ErrConsumerNotFound before the first
// db-manager ran).
func (c *Console) pending(ctx context.Context, m string) (int64, error) {
	cons, err := c.js.Consumer(ctx, queue.RequestStream, queue.ConsumerName(m))
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("console: consumer of %s: %w", m, err)
	}
	return int64(info.NumPending) + int64(info.NumAckPending), nil
}

// Subscriber is a consumer of TEATREE_NOTIFY that receives a model's
// notifications.
type Subscriber struct {
	Name    string
	Filter  string
	Pending uint64 // notifications not yet delivered
	Lag     int64  // versions between the model's current one and the notification at the subscriber's ack floor; -1: unknown
}

// subscribers lists the consumers of TEATREE_NOTIFY whose filter covers
// model m; lag is measured against current.
func (c *Console) subscribers(ctx context.Context, m string, current int64) ([]Subscriber, error) {
	st, err := c.js.Stream(ctx, queue.NotifyStream)
	if err != nil {
		return nil, fmt.Errorf("console: notify stream: %w", err)
	}
	subject := queue.NotifySubject(m)
	var out []Subscriber
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		filters := info.Config.FilterSubjects
		if info.Config.FilterSubject != "" {
			filters = append(filters, info.Config.FilterSubject)
		}
		filter, ok := covering(filters, subject)
		if !ok {
			continue
		}
		s := Subscriber{Name: info.Name, Filter: filter, Pending: info.NumPending, Lag: -1}
		// What the subscriber has processed: its ack floor, or what was
		// delivered to it when it does not ack (an ordered consumer).
		seq := info.AckFloor.Stream
		if info.Config.AckPolicy == jetstream.AckNonePolicy {
			seq = info.Delivered.Stream
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			s.Lag = 0
		} else if seq > 0 {
			if msg, err := st.GetMsg(ctx, seq); err == nil && msg.Subject == subject {
				if n, err := notify.Decode(msg.Data); err == nil && n.Version > 0 {
					s.Lag = max(current-n.Version, 0)
				}
			}
		}
		out = append(out, s)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("console: notify consumers: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// covering returns the filter of filters that matches subject (no filter
// matches everything).
func covering(filters []string, subject string) (string, bool) {
	if len(filters) == 0 {
		return ">", true
	}
	for _, f := range filters {
		if subjectMatches(f, subject) {
			return f, true
		}
	}
	return "", false
}

// subjectMatches reports whether NATS subject filter f (with * and >)
// matches subject.
func subjectMatches(f, subject string) bool {
	ft, st := strings.Split(f, "."), strings.Split(subject, ".")
	for i, t := range ft {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) || (t != "*" && t != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}

func (c *Console) models(w http.ResponseWriter, r *http.Request) {
	rows, err := c.Models(r.Context())
	if err != nil {
		c.fail(w, err)
		return
	}
	c.render(w, "models.html", map[string]any{"Title": "models", "Models": rows})
}

// VersionRow is one line of a model's versions table.
type VersionRow struct {
	controldb.Version
	Rows int64
}

func (c *Console) model(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("model")
	if err := model.ValidateID(id); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m, err := c.ctl.GetModel(ctx, id)
	if err != nil {
		c.fail(w, err)
		return
	}
	vs, err := c.ctl.ListVersions(ctx, id, false)
	if err != nil {
		c.fail(w, err)
		return
	}
	reqs, err := c.ctl.RecentRequests(ctx, id, RecentRequests)
	if err != nil {
		c.fail(w, err)
		return
	}
	lat, err := c.ctl.PublicationLatencies(ctx, id, max(len(vs), 1))
	if err != nil {
		c.fail(w, err)
		return
	}
	subs, err := c.subscribers(ctx, id, m.CurrentVersion)
	if err != nil {
		c.fail(w, err)
		return
	}
	pending := int64(-1)
	if n, err := c.pending(ctx, id); err == nil {
		pending = n
	}
	rows := make([]VersionRow, len(vs))
	var rowPts, bytePts, latPts []point
	for i, v := range vs {
		rows[len(vs)-1-i] = VersionRow{Version: v}
		for _, t := range v.Tables {
			rows[len(vs)-1-i].Rows += t.Rows
		}
		rowPts = append(rowPts, point{float64(v.Version), float64(rows[len(vs)-1-i].Rows)})
		bytePts = append(bytePts, point{float64(v.Version), float64(v.Bytes)})
	}
	for _, l := range lat {
		latPts = append(latPts, point{float64(l.Version), l.Latency.Seconds()})
	}
	c.render(w, "model.html", map[string]any{
		"Title":       "model " + id,
		"Model":       m,
		"Pending":     pending,
		"Versions":    rows,
		"Requests":    reqs,
		"Subscribers": subs,
		"RowsPlot":    svgPlot("rows", "rows per version", rowPts, humanCount),
		"BytesPlot":   svgPlot("bytes", "snapshot bytes per version", bytePts, func(v float64) string { return humanBytes(int64(v)) }),
		"LatencyPlot": svgPlot("latency", "publication latency per version (s)", latPts, func(v float64) string { return fmt.Sprintf("%.2fs", v) }),
	})
}

func (c *Console) request(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := model.ValidateRequestID(id); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec, err := c.ctl.GetRequest(r.Context(), id)
	if err != nil {
		c.fail(w, err)
		return
	}
	var took time.Duration
	if !rec.Finished.IsZero() {
		took = rec.Finished.Sub(rec.Submitted)
	}
	c.render(w, "request.html", map[string]any{"Title": "request " + id, "Request": rec, "Took": took})
}

func (c *Console) render(w http.ResponseWriter, name string, data map[string]any) {
	data["Poll"] = PollInterval.Milliseconds()
	data["Now"] = time.Now().UTC()
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		c.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, b.String())
}

// fail answers with the error: 404 for model.ErrNotFound, else 500 (and
// logs it).
func (c *Console) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, model.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	c.log.Error("console page", "err", err)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanCount(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
