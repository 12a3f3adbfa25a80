package cli

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
)

// pulled is what a pull wrote, printed by pull --json (one line each).
// For a block version Fetched + Reused is Bytes less its all-zero blocks,
// which are neither (the file is sparse there); for a whole-file version
// Fetched is Bytes.
type pulled struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	Path    string `json:"path"`   // absolute
	Digest  string `json:"digest"` // the block map's root, or the file's sha256
	Bytes   int64  `json:"bytes"`
	Fetched int64  `json:"fetched_bytes"` // downloaded from the object store
	Reused  int64  `json:"reused_bytes"`  // copied from local files
}

// printPulled writes p as one JSON line, or its path (when following: with
// what it cost).
func (e *env) printPulled(p pulled, asJSON, follow bool) {
	switch {
	case asJSON:
		b, _ := json.Marshal(p)
		fmt.Fprintln(e.stdout, string(b))
	case follow:
		fmt.Fprintf(e.stdout, "%s  version %d  fetched %s, reused %s\n", p.Path, p.Version, humanize.IBytes(uint64(p.Fetched)), humanize.IBytes(uint64(p.Reused)))
	default:
		fmt.Fprintln(e.stdout, p.Path)
	}
}

// pull writes version v to out, reusing the file at out (an earlier
// version, usually) and the cached snapshots of the model.
func (e *env) pull(ctx context.Context, store objstore.Store, v controldb.Version, out string) (pulled, error) {
	reuse := []string{out}
	if cached, err := e.cachedSnapshots(v.Model); err == nil {
		reuse = append(reuse, cached...)
	}
	return e.download(ctx, store, v, out, reuse)
}

// cachedSnapshots lists the snapshot cache entries of model m in this
// stack, newest version first.
func (e *env) cachedSnapshots(m string) ([]string, error) {
	dir, err := e.snapshotDir(m)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type entry struct {
		path    string
		version int64
	}
	var all []entry
	for _, d := range ents {
		n, _, ok := strings.Cut(d.Name(), "-")
		v, err := strconv.ParseInt(n, 10, 64)
		if !ok || err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".duckdb") {
			continue // downloads in progress start with '.'
		}
		all = append(all, entry{filepath.Join(dir, d.Name()), v})
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(b.version, a.version) })
	paths := make([]string, len(all))
	for i, x := range all {
		paths[i] = x.path
	}
	return paths, nil
}

// fetchBlocks writes block version v to out with blocks.Fetch: the blocks
// that the files in reuse hold come from them, the others from the store,
// in parallel, every block verified and the map checked against the root
// Postgres records. A progress bar counts the bytes written on a terminal.
func (e *env) fetchBlocks(ctx context.Context, store objstore.Store, v controldb.Version, out string, reuse []string) (*blocks.Map, blocks.ReconstructStats, error) {
	root, err := blocks.ParseDigest(v.SHA256)
	if err != nil {
		return nil, blocks.ReconstructStats{}, fmt.Errorf("version %d of %s records a bad root digest: %w", v.Version, v.Model, err)
	}
	maps := map[string]*blocks.Map{}
	var local []string
	for _, p := range reuse {
		if m := e.localMap(ctx, p); m != nil {
			maps[p] = m
			local = append(local, p)
		}
	}
	opts := blocks.FetchOptions{Reuse: local, Maps: maps}
	if bar := e.progressBar(v); bar != nil {
		defer bar.Finish()
		opts.Progress = func(n int64) { bar.Add64(n) }
	}
	m, st, err := blocks.Fetch(ctx, store, v.Model, v.SnapshotURI, root, out, opts)
	switch {
	case err == nil:
		return m, st, nil
	case ctx.Err() != nil:
		return nil, st, ctx.Err()
	case errors.Is(err, model.ErrInvalid): // blocks.ErrCorrupt, or a block map that does not parse
		return nil, st, withCode(ExitError, fmt.Errorf("snapshot of %s version %d is corrupt in the object store, nothing written: %s", v.Model, v.Version, unnamed(err, out)))
	case errors.Is(err, model.ErrNotFound):
		return nil, st, withCode(ExitError, fmt.Errorf("snapshot of %s version %d is incomplete in the object store (%s), nothing written: %s", v.Model, v.Version, v.SnapshotURI, unnamed(err, out)))
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, st, err // a local file
	}
	return nil, st, withCode(ExitUnreachable, fmt.Errorf("download %s: %w", v.SnapshotURI, err))
}

// unnamed is the message of err from Reconstruct without the name of the
// temporary file it was building, which the user never sees.
func unnamed(err error, tmp string) string {
	return strings.Replace(err.Error(), "blocks: reconstruct "+tmp+": ", "", 1)
}

// progressBar returns a bar in bytes for v on stderr when it is a
// terminal, else nil.
func (e *env) progressBar(v controldb.Version) *progressbar.ProgressBar {
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return progressbar.DefaultBytes(v.Bytes, fmt.Sprintf("%s v%d", v.Model, v.Version))
	}
	return nil
}

// mapEntry is the block map of a file teactl wrote (or mapped), kept in
// the cache under pull/<sha256 of the absolute path>.json so that the next
// pull does not hash the file again. It is used while the file has the
// same size and modification time; otherwise the file is mapped again.
// A stale entry that passes costs only misses: every block read from the
// file is verified.
type mapEntry struct {
	Path  string      `json:"path"`
	Size  int64       `json:"size"`
	MTime time.Time   `json:"mtime"`
	Map   *blocks.Map `json:"map"`
}

// mapEntryPath is where the map of the file at path is kept.
func (e *env) mapEntryPath(path string) (string, error) {
	base, err := e.cacheDir()
	if err != nil {
		return "", err
	}
	return mapEntryUnder(base, path)
}

func mapEntryUnder(base, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(base, "pull", hex.EncodeToString(sum[:])+".json"), nil
}

// localMap returns the block map of the DuckDB file at path: the recorded
// one when it is current, else a fresh blocks.MapFile, recorded for next
// time. It returns nil when there is no file there or it is not a file
// package blocks maps (then it is not reused).
func (e *env) localMap(ctx context.Context, path string) *blocks.Map {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	key, err := e.mapEntryPath(path)
	if err != nil {
		return nil
	}
	if b, err := os.ReadFile(key); err == nil {
		var ent mapEntry
		if json.Unmarshal(b, &ent) == nil && ent.Map != nil && ent.Size == st.Size() && ent.MTime.Equal(st.ModTime()) {
			return ent.Map
		}
	}
	m, _, err := blocks.MapFile(ctx, path)
	if err != nil {
		return nil
	}
	e.saveMap(path, m)
	return m
}

// saveMap records m as the map of the file at path. It is a cache: a
// failure only means the next pull hashes the file.
func (e *env) saveMap(path string, m *blocks.Map) {
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	key, err := e.mapEntryPath(path)
	if err != nil {
		return
	}
	abs, _ := filepath.Abs(path)
	b, err := json.Marshal(mapEntry{Path: abs, Size: st.Size(), MTime: st.ModTime(), Map: m})
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(key), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(key), ".map-*")
	if err != nil {
		return
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil && cerr == nil {
		os.Rename(tmp.Name(), key)
	}
}

// followPoll is how often pull --follow asks Postgres for a newer version
// besides the notifications: a safety net for a notification it missed.
const followPoll = 30 * time.Second

// follow keeps out at the latest version of model m: it pulls the latest,
// then again whenever an applied notification (or the poll) announces a
// newer one. Each version is built beside out, verified and renamed over
// it, reusing the current out; versions published during a build are
// skipped for the latest. It returns nil when ctx ends (out is then whole,
// at the last version pulled). A failure of the first pull is returned;
// later failures are printed and retried at the next notification or poll.
func (e *env) follow(ctx context.Context, d *app.Deps, m, out string, asJSON bool) error {
	if _, err := d.Ctl.GetModel(ctx, m); err != nil {
		return err
	}
	// Subscribe first: a version published after the first lookup is
	// announced.
	sub, err := notify.Subscribe(ctx, d.JS, m, notify.Start{})
	if err != nil {
		return withCode(ExitUnreachable, err)
	}
	defer sub.Stop()
	newer := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for {
			n, err := sub.Next(gctx)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return withCode(ExitUnreachable, err)
			}
			if n.Status == model.StatusApplied {
				select {
				case newer <- struct{}{}:
				default: // one pending is enough: the puller takes the latest
				}
			}
		}
	})
	g.Go(func() error {
		tick := time.NewTicker(followPoll)
		defer tick.Stop()
		var have int64
		for first := true; ; first = false {
			err := func() error {
				v, err := d.Ctl.GetVersion(gctx, m, 0)
				if errors.Is(err, model.ErrNotFound) {
					return nil // no version yet, or all expired: wait
				}
				if err != nil {
					return withCode(ExitUnreachable, err)
				}
				if v.Version <= have {
					return nil
				}
				p, err := e.pull(gctx, d.Store, v, out)
				if err != nil {
					return err
				}
				have = v.Version
				e.printPulled(p, asJSON, true)
				return nil
			}()
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				if first {
					return err
				}
				fmt.Fprintf(e.stderr, "teactl: %v (%s kept; retrying at the next version or in %s)\n", err, out, followPoll)
			}
			select {
			case <-gctx.Done():
				return nil
			case <-newer:
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}
