package dbmanager

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
	"github.com/teatree/teatree/sqlast"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	Model string
	// From is the first version replayed (its parent's snapshot is the
	// start); 0: the oldest version from which every request up to the
	// latest version can still be replayed.
	From int64
	// Dir is the scratch directory (the replayed file, the published
	// snapshots compared with it, staged payloads); the caller removes it.
	Dir string
	// Threads and MemoryLimit are the scratch DuckDB's (Config's
	// defaults when zero); WasmCacheDir is Config.WasmCacheDir.
	Threads      int
	MemoryLimit  string
	WasmCacheDir string
}

// VerifyReport is what Verify found: the versions it replayed, oldest
// first, each compared table by table with the published version. It
// stops at the first version that differs.
type VerifyReport struct {
	Model string `json:"model"`
	From  int64  `json:"from_version"`
	// Start says why no earlier version was replayed (with From 0): the
	// first request that can no longer be replayed, or a parent expired.
	Start    string          `json:"start,omitempty"`
	Versions []VersionVerify `json:"versions"`
	OK       bool            `json:"ok"`
}

// VersionVerify is one version replayed: Status "ok" or "diff"; Diff says
// what differs first (a table, or a request that did not apply again).
type VersionVerify struct {
	Version  int64         `json:"version"`
	Replayed int           `json:"replayed"` // requests applied again
	Skipped  int           `json:"skipped"`  // failed, rejected, cancelled: as the lineage records
	Status   string        `json:"status"`
	Diff     string        `json:"diff,omitempty"`
	Tables   []TableVerify `json:"tables"`
}

// TableVerify compares one table of the replay with the published
// version: Status "ok", "diff" (rows, columns or content differ),
// "missing" (not in the replay) or "extra" (only in the replay). Note
// says when floating columns were equal only to single precision.
type TableVerify struct {
	Table     string `json:"table"`
	Rows      int64  `json:"rows"`           // in the replay
	Published int64  `json:"published_rows"` // in the published version
	Status    string `json:"status"`
	Note      string `json:"note,omitempty"`
}

// ErrNotReplayable is wrapped by the error of Verify when the version asked
// for (or, with From 0, the latest version) cannot be replayed: a request
// of it left the stream, its staged payload is gone, its version has no
// lineage, or the parent's snapshot expired. The message names the
// request and what to do.
var ErrNotReplayable = errors.New("not replayable")

// Verify replays the model's retained request log into a scratch copy and
// compares it, version by version and table by table, with the published
// versions: the start is the snapshot of version From−1 (an empty file for
// version 1); each version's applied requests (its lineage) are read from
// the request stream by sequence and applied together through the
// db-manager's own apply code (applyItems: functions, derived tables,
// modules), its failed, rejected and cancelled requests are skipped as
// recorded; then every table of schema main is compared with the published
// snapshot by row count, columns and an order-independent hash of its rows.
// Nothing of the stack is changed (no notification, no version, no staged
// payload deleted).
//
// Errors: model.ErrNotFound for a model without versions or a version not
// retained; ErrNotReplayable (above); the errors of the stack's services.
// A difference is not an error: it is in the report (OK false).
func Verify(ctx context.Context, log *slog.Logger, js jetstream.JetStream, ctl *controldb.DB, store objstore.Store, opts VerifyOptions) (VerifyReport, error) {
	rep := VerifyReport{Model: opts.Model, Versions: []VersionVerify{}}
	mdl, err := ctl.GetModel(ctx, opts.Model)
	if err != nil {
		return rep, err
	}
	vs, err := ctl.ListVersions(ctx, opts.Model, false)
	if err != nil {
		return rep, err
	}
	if len(vs) == 0 {
		return rep, fmt.Errorf("verify: model %s has no version yet: %w", opts.Model, model.ErrNotFound)
	}
	stream, err := js.Stream(ctx, queue.RequestStream)
	if err != nil {
		return rep, fmt.Errorf("verify: request stream: %w", err)
	}
	src := &replaySource{model: opts.Model, stream: stream, store: store, allowSQL: mdl.AllowSQL}
	byNumber := map[int64]int{}
	for i, v := range vs {
		byNumber[v.Version] = i
	}
	// first is the index in vs of the first version replayed.
	first := -1
	if opts.From > 0 {
		i, ok := byNumber[opts.From]
		if !ok {
			return rep, fmt.Errorf("verify: model %s has no retained version %d (teactl versions lists them): %w", opts.Model, opts.From, model.ErrNotFound)
		}
		if opts.From > 1 && (i == 0 || vs[i-1].Version != opts.From-1) {
			return rep, fmt.Errorf("verify: version %d of %s: %w: its parent, version %d, expired (nothing to start from); verify from a later version", opts.From, opts.Model, ErrNotReplayable, opts.From-1)
		}
		for j := i; j < len(vs); j++ {
			if err := src.check(ctx, vs[j]); err != nil {
				return rep, err
			}
		}
		first = i
	} else {
		for i := len(vs) - 1; i >= 0; i-- {
			v := vs[i]
			if err := src.check(ctx, v); err != nil {
				rep.Start = err.Error()
				break
			}
			if v.Version == 1 {
				first = i
				break
			}
			if i == 0 || vs[i-1].Version != v.Version-1 {
				rep.Start = fmt.Sprintf("version %d: its parent, version %d, expired", v.Version, v.Version-1)
				break
			}
			first = i
		}
		if first < 0 {
			return rep, fmt.Errorf("verify: nothing to replay: %s", rep.Start)
		}
	}
	rep.From = vs[first].Version

	cfg := Config{Model: opts.Model, DataDir: opts.Dir, Threads: opts.Threads, MemoryLimit: opts.MemoryLimit, WasmCacheDir: opts.WasmCacheDir, Holder: "verify"}
	m, err := New(cfg, log, js, ctl, store)
	if err != nil {
		return rep, err
	}
	defer m.wasm.Close(context.WithoutCancel(ctx))
	m.replay, m.model = true, mdl
	for _, d := range []string{m.cfg.dir(), m.cfg.stagingDir(), m.cfg.versionsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
	}
	if rep.From > 1 {
		if _, _, err := snapshot.Fetch(ctx, store, vs[first-1], m.cfg.dbPath(), blocks.FetchOptions{}); err != nil {
			return rep, fmt.Errorf("verify: fetch version %d, the start: %w", vs[first-1].Version, err)
		}
	}
	if err := m.openDB(ctx); err != nil {
		return rep, err
	}
	defer m.closeDB()
	if err := m.initSchema(ctx, 0); err != nil {
		return rep, err
	}
	var pos uint64
	if err := m.db.QueryRowContext(ctx, "SELECT last_seq FROM _teatree.position").Scan(&pos); err != nil {
		return rep, fmt.Errorf("verify: read position: %w", err)
	}
	m.position.Store(pos)

	published := filepath.Join(m.cfg.versionsDir(), "published.duckdb")
	for _, v := range vs[first:] {
		vv, err := m.replayVersion(ctx, src, v)
		if err != nil {
			return rep, err
		}
		if vv.Status == "ok" {
			if err := m.compareVersion(ctx, store, v, src.items[v.Version], published, &vv); err != nil {
				return rep, err
			}
		}
		rep.Versions = append(rep.Versions, vv)
		if vv.Status != "ok" {
			return rep, nil
		}
	}
	rep.OK = true
	return rep, nil
}

// replaySource reads the requests of a version's lineage from the request
// stream and checks that they can be replayed.
type replaySource struct {
	model    string
	stream   jetstream.Stream
	store    objstore.Store
	allowSQL bool
	items    map[int64][]*item // by version, from check
}

// check reads the applied requests of v from the stream and keeps them;
// the error (wrapping ErrNotReplayable) names the first one that cannot be
// replayed and why.
func (s *replaySource) check(ctx context.Context, v controldb.Version) error {
	if v.Lineage == nil {
		return fmt.Errorf("verify: version %d: %w: it has no lineage (published by a release before lineage); verify from a later version", v.Version, ErrNotReplayable)
	}
	var items []*item
	for _, r := range v.Lineage.Requests {
		if r.Status != model.StatusApplied {
			continue
		}
		what := fmt.Sprintf("verify: version %d: request %s (stream sequence %d, %s)", v.Version, r.ID, r.Seq, r.Function)
		raw, err := s.stream.GetMsg(ctx, r.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("%s: %w: it is no longer in the request stream (retention); verify from a later version", what, ErrNotReplayable)
		}
		if err != nil {
			return fmt.Errorf("%s: read the request stream: %w", what, err)
		}
		req, err := model.DecodeRequest(raw.Data)
		if err == nil && (raw.Subject != queue.RequestSubject(s.model) || req.ID != r.ID || req.Digest() != r.Digest) {
			err = errors.New("the stream holds another request at that sequence")
		}
		var call functions.Call
		if err == nil {
			call, err = functions.Prepare(req, s.allowSQL)
		}
		if err != nil {
			return fmt.Errorf("%s: %w: %v", what, ErrNotReplayable, err)
		}
		it := &item{seq: r.Seq, queued: raw.Time, req: req, call: call, digest: r.Digest, payload: functions.PayloadURI(req.Args)}
		if it.payload != "" {
			if _, err := s.store.Stat(ctx, it.payload); errors.Is(err, model.ErrNotFound) {
				return fmt.Errorf("%s: %w: its staged payload %s was deleted after the version was published (run the db-manager with --keep-staged to keep payloads for verify); verify from a later version", what, ErrNotReplayable, it.payload)
			} else if err != nil {
				return fmt.Errorf("%s: staged payload %s: %w", what, it.payload, err)
			}
		}
		items = append(items, it)
	}
	if s.items == nil {
		s.items = map[int64][]*item{}
	}
	s.items[v.Version] = items
	return nil
}

// replayVersion applies the requests of v kept by check, in one batch (a
// version's batches end in the same state: derived tables are refreshed
// after each, and merged incrementally or recomputed to the same result).
func (m *Manager) replayVersion(ctx context.Context, src *replaySource, v controldb.Version) (VersionVerify, error) {
	items := src.items[v.Version]
	vv := VersionVerify{Version: v.Version, Replayed: len(items), Skipped: len(v.Lineage.Requests) - len(items), Status: "ok", Tables: []TableVerify{}}
	if len(items) == 0 {
		return vv, nil
	}
	m.liveMu.Lock()
	err := m.applyItems(ctx, items)
	m.liveMu.Unlock()
	os.RemoveAll(m.cfg.stagingDir())
	os.MkdirAll(m.cfg.stagingDir(), 0o755)
	if err != nil {
		return vv, fmt.Errorf("verify: version %d: %w", v.Version, err)
	}
	for _, it := range items {
		if it.status != model.StatusApplied {
			vv.Status = "diff"
			vv.Diff = fmt.Sprintf("request %s (stream sequence %d, %s) was applied in version %d but %s on replay: %v", it.req.ID, it.seq, it.req.Function, v.Version, it.status, it.err)
			return vv, nil
		}
	}
	return vv, nil
}

// compareVersion fetches the snapshot of v to path (reusing the blocks of
// the previous one there and of the replay) and compares its tables with
// the replay's, recording them in vv.
func (m *Manager) compareVersion(ctx context.Context, store objstore.Store, v controldb.Version, items []*item, path string, vv *VersionVerify) error {
	if _, _, err := snapshot.Fetch(ctx, store, v, path, blocks.FetchOptions{Reuse: []string{path}}); err != nil {
		return fmt.Errorf("verify: fetch version %d: %w", v.Version, err)
	}
	pub, err := duck.Open(ctx, path, duck.Options{ReadOnly: true, Threads: m.cfg.Threads, MemoryLimit: m.cfg.MemoryLimit})
	if err != nil {
		return fmt.Errorf("verify: open version %d: %w", v.Version, err)
	}
	defer pub.Close()
	replayed, err := fingerprints(ctx, m.db)
	if err != nil {
		return fmt.Errorf("verify: replay of version %d: %w", v.Version, err)
	}
	want, err := fingerprints(ctx, pub)
	if err != nil {
		return fmt.Errorf("verify: version %d: %w", v.Version, err)
	}
	var names []string
	for t := range replayed {
		names = append(names, t)
	}
	for t := range want {
		if _, ok := replayed[t]; !ok {
			names = append(names, t)
		}
	}
	slices.Sort(names)
	for _, t := range names {
		got, inReplay := replayed[t]
		pubFP, inPublished := want[t]
		tv := TableVerify{Table: t, Rows: got.rows, Published: pubFP.rows, Status: "ok"}
		switch {
		case !inReplay:
			tv.Status = "missing"
		case !inPublished:
			tv.Status = "extra"
		case got.columns != pubFP.columns:
			tv.Status = "diff"
			tv.Note = "columns differ: " + got.columns + " against " + pubFP.columns
		case got.rows != pubFP.rows || got.exact != pubFP.exact && got.single != pubFP.single:
			tv.Status = "diff"
		case got.exact != pubFP.exact:
			tv.Note = "floating columns equal to single precision only (parallel float sums round differently)"
		}
		if tv.Status == "diff" {
			if f := m.volatileCall(ctx, items, t); f != "" {
				tv.Status, tv.Note = "not deterministic", "its query calls "+f+"(), which gives another result on replay"
			}
		}
		if tv.Status != "ok" && vv.Status == "ok" {
			vv.Status = "diff"
			vv.Diff = fmt.Sprintf("table %s differs from version %d: %s", t, v.Version, tableDiff(tv))
		}
		vv.Tables = append(vv.Tables, tv)
	}
	return nil
}

func tableDiff(tv TableVerify) string {
	switch {
	case tv.Status == "missing":
		return "the replay has no such table"
	case tv.Status == "extra":
		return "the published version has no such table"
	case tv.Status == "not deterministic":
		return "not deterministic: " + tv.Note
	case tv.Note != "":
		return tv.Note
	case tv.Rows != tv.Published:
		return fmt.Sprintf("%d rows replayed, %d published", tv.Rows, tv.Published)
	}
	return fmt.Sprintf("same %d rows in number, different content", tv.Rows)
}

// volatileCall is the name of a function that is not deterministic
// (DuckDB's catalog: stability other than CONSISTENT, such as random(),
// now(), uuid()) called by the query that wrote table t: a refresh or
// derive of t among items, else t's derived-table definition; "" if none
// or unknown.
func (m *Manager) volatileCall(ctx context.Context, items []*item, t string) string {
	var query string
	for _, it := range items {
		if it.req.Function != "refresh" && it.req.Function != "derive" {
			continue
		}
		var a struct{ Table, Query string }
		if json.Unmarshal(it.req.Args, &a) == nil && a.Table == t {
			query = a.Query
		}
	}
	if query == "" {
		m.db.QueryRowContext(ctx, "SELECT query FROM _teatree.derived WHERE table_name = ?", t).Scan(&query)
	}
	if query == "" {
		return ""
	}
	doc, _, err := sqlast.Parse(ctx, m.db, query)
	if err != nil {
		return ""
	}
	rows, err := m.db.QueryContext(ctx, "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE stability <> 'CONSISTENT'")
	if err != nil {
		return ""
	}
	defer rows.Close()
	volatile := map[string]bool{}
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			volatile[n] = true
		}
	}
	return sqlast.FindAggregate(doc, volatile)
}

// fingerprint is what is compared of a table: its columns (name and type,
// in order), its row count, and the sum of the hashes of its rows (DuckDB's
// hash of the row, all columns; a sum, so neither order nor storage
// matters, and duplicates count), once exactly and once with floating
// columns cast to single precision.
type fingerprint struct {
	columns       string
	rows          int64
	exact, single string
}

// fingerprints returns the fingerprint of every table of schema main of
// the database db is open on.
func fingerprints(ctx context.Context, db *sql.DB) (map[string]fingerprint, error) {
	rows, err := db.QueryContext(ctx, `SELECT table_name, column_name, data_type FROM duckdb_columns()
		WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
		AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main')
		ORDER BY table_name, column_index`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	type columns struct{ desc, exact, single []string }
	tables := map[string]*columns{}
	for rows.Next() {
		var t, name, typ string
		if err := rows.Scan(&t, &name, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tables: %w", err)
		}
		c := tables[t]
		if c == nil {
			c = &columns{}
			tables[t] = c
		}
		c.desc = append(c.desc, name+" "+typ)
		c.exact = append(c.exact, duck.Ident(name))
		if typ == "DOUBLE" || typ == "FLOAT" {
			c.single = append(c.single, duck.Ident(name)+"::FLOAT")
		} else {
			c.single = append(c.single, duck.Ident(name))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	out := map[string]fingerprint{}
	for t, c := range tables {
		fp := fingerprint{columns: strings.Join(c.desc, ", ")}
		q := fmt.Sprintf(`SELECT count(*), coalesce(sum(hash(%s)), 0)::VARCHAR, coalesce(sum(hash(%s)), 0)::VARCHAR FROM main.%s`,
			strings.Join(c.exact, ", "), strings.Join(c.single, ", "), duck.Ident(t))
		if err := db.QueryRowContext(ctx, q).Scan(&fp.rows, &fp.exact, &fp.single); err != nil {
			return nil, fmt.Errorf("table %s: %w", t, err)
		}
		out[t] = fp
	}
	return out, nil
}
