package reader

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/snapshot"
)

// fileSuffix ends the name of every file of an open version, so that a
// restart removes the reader's stale files and nothing else.
const fileSuffix = ".reader.duckdb"

// openVersion is one version open read-only in its own DuckDB instance.
// refs counts the queries running on it (guarded by Server.mu); a retired
// version (a newer one is the latest, or it was idle) is closed and its
// file removed when its last query ends.
type openVersion struct {
	v       controldb.Version
	path    string
	db      *sql.DB
	bm      *blocks.Map // block map of path (nil for a whole-file snapshot)
	refs    int
	retired bool
	used    time.Time
}

// entry is a version being opened or open.
type entry struct {
	ready chan struct{} // closed when ov or err is set
	ov    *openVersion
	err   error
}

// modelState is what the reader holds of one model (guarded by Server.mu).
type modelState struct {
	latest   int64            // the version queries without one get; 0: none yet
	versions map[int64]*entry // open (or opening) versions
	updating bool             // a newer latest is being opened
	used     time.Time        // last query
}

// acquire returns version n of model m (0: the latest) open, with a
// reference the caller gives back with release. The latest is the one
// Postgres records when the query starts (controldb.LatestVersion: the
// version's tables are read only when it must be opened) (or a newer one the reader
// serves already): a query never sees an older version than a local
// teactl query would. The reader opens a version it does not hold
// (fetching its snapshot, reusing the blocks of an open version of the
// model) under serverCtx, the reader's lifetime, so that a query that
// gives up (ctx) does not fail the others waiting for the same version.
func (s *Server) acquire(ctx, serverCtx context.Context, m string, n int64) (*openVersion, error) {
	var known *controldb.Version
	want := n
	if n == 0 {
		latest, err := s.ctl.LatestVersion(ctx, m)
		if err != nil {
			return nil, err
		}
		want = latest
	}
	for {
		s.mu.Lock()
		ms := s.models[m]
		if ms == nil {
			ms = &modelState{versions: map[int64]*entry{}}
			s.models[m] = ms
		}
		ms.used = time.Now()
		if n == 0 && ms.latest > want {
			want = ms.latest // published since the lookup, and open
		}
		if e := ms.versions[want]; e != nil {
			s.mu.Unlock()
			select {
			case <-e.ready:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if e.err != nil {
				return nil, e.err
			}
			s.mu.Lock()
			if e.ov.retired {
				// Retired meanwhile (idle, or a newer latest): look again.
				if ms.versions[want] == e {
					delete(ms.versions, want)
				}
				s.mu.Unlock()
				continue
			}
			e.ov.refs++
			e.ov.used = time.Now()
			s.mu.Unlock()
			return e.ov, nil
		}
		s.mu.Unlock()
		if known == nil || known.Version != want {
			v, err := s.ctl.GetVersion(ctx, m, want)
			if err != nil {
				return nil, err
			}
			known = &v
		}
		if _, err := s.open(ctx, serverCtx, m, *known, n == 0); err != nil {
			return nil, err
		}
	}
}

// release gives back a reference of acquire.
func (s *Server) release(ov *openVersion) {
	s.mu.Lock()
	ov.refs--
	ov.used = time.Now()
	closeNow := ov.refs == 0 && ov.retired
	s.mu.Unlock()
	if closeNow {
		s.closeVersion(ov)
	}
}

// open opens version v of model m unless it is open or opening, and makes
// it the latest when latest is set and it is newer than the latest. It
// returns the entry once ready, or ctx's error when ctx ends first; the
// opening goes on under serverCtx.
func (s *Server) open(ctx, serverCtx context.Context, m string, v controldb.Version, latest bool) (*entry, error) {
	s.mu.Lock()
	ms := s.models[m]
	if ms == nil {
		ms = &modelState{versions: map[int64]*entry{}, used: time.Now()}
		s.models[m] = ms
	}
	e := ms.versions[v.Version]
	if e == nil {
		e = &entry{ready: make(chan struct{})}
		ms.versions[v.Version] = e
		reuse := s.reusable(ms)
		if !s.goTrackedLocked(func() {
			ov, err := s.build(serverCtx, v, reuse)
			s.mu.Lock()
			e.ov, e.err = ov, err
			if err != nil {
				delete(ms.versions, v.Version)
			} else {
				ov.used = time.Now()
			}
			close(e.ready)
			s.mu.Unlock()
		}) {
			delete(ms.versions, v.Version)
			e.err = errors.New("reader: shutting down")
			close(e.ready)
		}
	}
	s.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.err != nil {
		return nil, e.err
	}
	if latest {
		s.promote(m, e)
	}
	return e, nil
}

// promote makes e's version the latest of model m when it is newer, and
// retires the previous latest: queries running on it finish there, it is
// closed when the last ends.
func (s *Server) promote(m string, e *entry) {
	var closeNow *openVersion
	s.mu.Lock()
	ms := s.models[m]
	if ms != nil && e.ov != nil && !e.ov.retired && e.ov.v.Version > ms.latest {
		if old := ms.versions[ms.latest]; old != nil && old.ov != nil {
			old.ov.retired = true
			delete(ms.versions, ms.latest)
			if old.ov.refs == 0 {
				closeNow = old.ov
			}
		}
		ms.latest = e.ov.v.Version
		s.log.Info("serving version", "model", m, "version", ms.latest)
	}
	s.mu.Unlock()
	if closeNow != nil {
		s.closeVersion(closeNow)
	}
}

// reusable lists the open versions of ms with their block maps, newest
// first, for a build to copy their blocks (s.mu held).
func (s *Server) reusable(ms *modelState) blocks.FetchOptions {
	opts := blocks.FetchOptions{Maps: map[string]*blocks.Map{}}
	var best *openVersion
	for _, e := range ms.versions {
		select {
		case <-e.ready:
		default:
			continue
		}
		if e.ov != nil && e.ov.bm != nil && (best == nil || e.ov.v.Version > best.v.Version) {
			best = e.ov
		}
	}
	if best != nil {
		// The file stays: it is removed only once closed, after its
		// queries, and a build holds no reference; a file removed meanwhile
		// is skipped by blocks.Fetch (its blocks are downloaded).
		opts.Reuse = []string{best.path}
		opts.Maps[best.path] = best.bm
	}
	return opts
}

// build fetches v's snapshot into Dir/<model>/<version>-<seq>.reader.duckdb, verifies
// its row counts and opens it read-only.
func (s *Server) build(ctx context.Context, v controldb.Version, opts blocks.FetchOptions) (*openVersion, error) {
	dir := filepath.Join(s.cfg.Dir, v.Model)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("reader: %w", err)
	}
	// A sequence number keeps apart two opens of one version (a retired
	// copy may still serve queries while the version is opened again).
	path := filepath.Join(dir, strconv.FormatInt(v.Version, 10)+"-"+strconv.FormatUint(s.seq.Add(1), 10)+fileSuffix)
	start := time.Now()
	bm, st, err := snapshot.Fetch(ctx, s.store, v, path, opts)
	if err != nil {
		return nil, fmt.Errorf("reader: fetch %s version %d: %w", v.Model, v.Version, err)
	}
	if err := snapshot.Verify(ctx, path, v); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("reader: %w", err)
	}
	db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true, Threads: s.cfg.Threads, MemoryLimit: s.cfg.MemoryLimit})
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("reader: %w", err)
	}
	s.fetched.Add(st.Fetched)
	s.reused.Add(st.Reused)
	s.log.Debug("opened version", "model", v.Model, "version", v.Version, "fetched", st.Fetched, "reused", st.Reused, "took", time.Since(start))
	return &openVersion{v: v, path: path, db: db, bm: bm}, nil
}

// closeVersion closes ov's DuckDB and removes its file.
func (s *Server) closeVersion(ov *openVersion) {
	if err := ov.db.Close(); err != nil {
		s.log.Warn("close version", "model", ov.v.Model, "version", ov.v.Version, "err", err)
	}
	if err := os.Remove(ov.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove version", "path", ov.path, "err", err)
	}
	s.log.Debug("closed version", "model", ov.v.Model, "version", ov.v.Version)
}

// update opens the latest version of model m when it is newer than the one
// served: called on an applied notification and by the poll. One update
// per model runs at a time; queries keep the served version meanwhile.
func (s *Server) update(ctx context.Context, m string) {
	s.mu.Lock()
	ms := s.models[m]
	if ms == nil || ms.updating {
		s.mu.Unlock()
		return
	}
	ms.updating = true
	have := ms.latest
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		ms.updating = false
		s.mu.Unlock()
	}()
	v, err := s.ctl.GetVersion(ctx, m, 0)
	if err != nil || v.Version <= have {
		return
	}
	if _, err := s.open(ctx, ctx, m, v, true); err != nil && ctx.Err() == nil {
		s.log.Warn("open newer version", "model", m, "version", v.Version, "err", err)
	}
}

// sweep closes the versions no query used for IdleTimeout and forgets the
// models none of whose versions is open.
func (s *Server) sweep(now time.Time) {
	var closing []*openVersion
	s.mu.Lock()
	for m, ms := range s.models {
		for n, e := range ms.versions {
			select {
			case <-e.ready:
			default:
				continue
			}
			if e.ov == nil || e.ov.refs > 0 || now.Sub(e.ov.used) < s.cfg.IdleTimeout {
				continue
			}
			e.ov.retired = true
			delete(ms.versions, n)
			closing = append(closing, e.ov)
			if n == ms.latest {
				ms.latest = 0
			}
		}
		if len(ms.versions) == 0 && !ms.updating {
			delete(s.models, m)
		}
	}
	s.mu.Unlock()
	for _, ov := range closing {
		s.log.Info("closing idle version", "model", ov.v.Model, "version", ov.v.Version)
		s.closeVersion(ov)
	}
}

// closeAll closes every version (at shutdown, after the queries ended).
func (s *Server) closeAll() {
	s.mu.Lock()
	var all []*openVersion
	for _, ms := range s.models {
		for _, e := range ms.versions {
			select {
			case <-e.ready:
				if e.ov != nil && !e.ov.retired {
					e.ov.retired = true
					all = append(all, e.ov)
				}
			default:
			}
		}
	}
	s.models = map[string]*modelState{}
	s.mu.Unlock()
	for _, ov := range all {
		s.closeVersion(ov)
	}
}
