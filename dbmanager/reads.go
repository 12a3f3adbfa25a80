package dbmanager

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/snapshot"
)

// readsDir holds the pulled versions of other models the model's
// requests read (args.reads): reads/<model>/<version>.duckdb.
func (c *Config) readsDir() string { return filepath.Join(c.dir(), "reads") }

// keepReads is how many pulled versions of each other model readsDir
// keeps: the newest, to reuse their blocks for the next one.
const keepReads = 2

// errReadsNotPinned is the transient error of a request with reads whose
// pins the dispatcher has not recorded yet.
var errReadsNotPinned = errors.New("the dispatcher has not pinned its reads yet")

// pinReads sets it.reads to the versions the dispatcher pinned for the
// reads of it (rec: its request log record, found or not). A request with
// reads is applied only with the pins: without them (the dispatcher has
// not handled it yet) the batch waits (transient); a request the
// dispatcher rejected is rejected (the dispatcher announced it).
func pinReads(it *item, rec controldb.RequestRecord, found bool) error {
	reads := functions.ReadsOf(it.req.Args)
	if len(reads) == 0 {
		return nil
	}
	if found && rec.Status == model.StatusRejected {
		it.status, it.err = model.StatusRejected, errors.New(rec.Error)
		return nil
	}
	if !found || len(rec.Reads) == 0 {
		return transientError{fmt.Errorf("dbmanager: request %s reads other models: %w", it.req.ID, errReadsNotPinned)}
	}
	for alias, r := range reads {
		p, ok := rec.Reads[alias]
		if !ok || p.Model != r.Model || (r.Version != 0 && p.Version != r.Version) {
			it.status, it.err = model.StatusFailed, fmt.Errorf("%w: reads.%s: the pinned version in the request log (%s@%d) is not the one asked for", model.ErrInvalid, alias, p.Model, p.Version)
			return nil
		}
	}
	it.reads = rec.Reads
	return nil
}

// hasReads reports whether it is a request with reads to apply.
func (it *item) hasReads() bool {
	return !it.skip && len(it.reads) > 0 && it.status != model.StatusRejected && it.status != model.StatusFailed && it.status != model.StatusCancelled
}

// rangeEnd is where the transaction that starts at items[lo] ends: a
// request with reads is alone in its transaction (DuckDB cannot detach a
// database a transaction read), the others are grouped up to it.
func rangeEnd(items []*item, lo int) int {
	if items[lo].hasReads() {
		return lo + 1
	}
	for i := lo + 1; i < len(items); i++ {
		if items[i].hasReads() {
			return i
		}
	}
	return len(items)
}

// attachReads attaches the pinned reads of the one request of items (a
// range from rangeEnd), if it has reads, and returns the function that
// detaches them after the transaction. A read that fails for the
// request's own fault (an expired version, a clashing alias) fails it.
func (m *Manager) attachReads(ctx context.Context, conn *sql.Conn, items []*item) (func(), error) {
	if len(items) != 1 || !items[0].hasReads() {
		return func() {}, nil
	}
	it := items[0]
	detach, err := functions.AttachReads(ctx, conn, functions.ReadsOf(it.req.Args), func(ctx context.Context, alias string) (string, error) {
		return m.readFile(ctx, it.reads[alias])
	})
	if err != nil {
		if judge(ctx, err) != failed {
			return nil, fmt.Errorf("dbmanager: request %s (seq %d): %w", it.req.ID, it.seq, err)
		}
		it.status, it.err = model.StatusFailed, fmt.Errorf("%s: %w", it.req.Function, err)
		m.logFailure(it)
	}
	return detach, nil
}

// readFile returns the local file of version mv of another model,
// pulling it into readsDir the first time (incrementally: reusing the
// blocks of the model's versions pulled before) and checking its root
// digest against the pin. An expired version fails the request.
func (m *Manager) readFile(ctx context.Context, mv model.ModelVersion) (string, error) {
	dir := filepath.Join(m.cfg.readsDir(), mv.Model)
	out := filepath.Join(dir, strconv.FormatInt(mv.Version, 10)+".duckdb")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	v, err := m.ctl.GetVersion(ctx, mv.Model, mv.Version)
	if errors.Is(err, model.ErrNotFound) {
		return "", fmt.Errorf("%w: the pinned read %s@%d is gone: %w (pin versions that requests read with 'teactl pin')", model.ErrInvalid, mv.Model, mv.Version, err)
	}
	if err != nil {
		return "", transientError{fmt.Errorf("dbmanager: read %s@%d: %w", mv.Model, mv.Version, err)}
	}
	if mv.Root != "" && v.SHA256 != mv.Root {
		return "", fmt.Errorf("%w: %s@%d has root %s, not the pinned %s", model.ErrInvalid, mv.Model, mv.Version, v.SHA256, mv.Root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", transientError{fmt.Errorf("dbmanager: reads dir: %w", err)}
	}
	old := m.pulledReads(dir)
	tmp := filepath.Join(dir, ".pull-"+strconv.FormatInt(mv.Version, 10))
	defer os.Remove(tmp)
	var opts blocks.FetchOptions
	if v.SnapshotFormat == controldb.FormatBlocks {
		opts.Reuse = old
	}
	if _, st, err := snapshot.Fetch(ctx, m.store, v, tmp, opts); err != nil {
		return "", transientError{fmt.Errorf("dbmanager: pull %s@%d: %w", mv.Model, mv.Version, err)}
	} else {
		m.log.Info("pulled a version of another model to read", "model", mv.Model, "version", mv.Version, "bytes", st.Bytes, "fetched", st.Fetched, "reused", st.Reused)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", transientError{fmt.Errorf("dbmanager: pull %s@%d: %w", mv.Model, mv.Version, err)}
	}
	for len(old) >= keepReads {
		os.Remove(old[len(old)-1])
		old = old[:len(old)-1]
	}
	return out, nil
}

// pulledReads lists the versions pulled into dir, newest first.
func (m *Manager) pulledReads(dir string) []string {
	ents, _ := os.ReadDir(dir)
	type pulled struct {
		n    int64
		path string
	}
	var ps []pulled
	for _, e := range ents {
		s, ok := strings.CutSuffix(e.Name(), ".duckdb")
		if n, err := strconv.ParseInt(s, 10, 64); ok && err == nil {
			ps = append(ps, pulled{n, filepath.Join(dir, e.Name())})
		}
	}
	slices.SortFunc(ps, func(a, b pulled) int { return int(b.n - a.n) })
	paths := make([]string, len(ps))
	for i, p := range ps {
		paths[i] = p.path
	}
	return paths
}

// readsOf is the reads column of _teatree.applied for it: the JSON array
// of the versions an applied request read, NULL for none.
func readsOf(it *item) any {
	if it.status != model.StatusApplied || len(it.reads) == 0 {
		return nil
	}
	vs := slices.Collect(maps.Values(it.reads))
	b, err := json.Marshal(vs)
	if err != nil {
		return nil
	}
	return string(b)
}

// sortReads sorts and dedups a lineage's reads.
func sortReads(rs []model.ModelVersion) []model.ModelVersion {
	slices.SortFunc(rs, func(a, b model.ModelVersion) int {
		if c := strings.Compare(a.Model, b.Model); c != 0 {
			return c
		}
		return int(a.Version - b.Version)
	})
	return slices.Compact(rs)
}
