package client

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// Source says what Open reads a version from.
type Source int

const (
	// FromSnapshot is the version's DuckDB snapshot, pulled into the
	// cache and opened read-only.
	FromSnapshot Source = iota
	// FromParquet is the version's Parquet archive: an in-memory DuckDB
	// with one view per table over its data files (see ParquetSelect),
	// each downloaded into the cache once and verified by its sha256.
	FromParquet
)

// Snapshot returns the path of version v's snapshot in the cache under
// Options.CacheDir, pulling it (as Pull does, reusing the model's other
// cached snapshots) when it is missing. Entries are named by stack, version
// and sha256, so a changed object is never mistaken for a cached one. A
// hit marks the entry used; a download evicts the least recently used
// entries beyond Options.CacheBytes, never those this Client opened. Do not
// write to the file.
//
// Errors: as Pull.
func (c *Client) Snapshot(ctx context.Context, v controldb.Version) (string, error) {
	store, err := c.store()
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.snapshotDir(v.Model), fmt.Sprintf("%d-%s.duckdb", v.Version, v.SHA256))
	c.use(path)
	if st, err := os.Stat(path); err == nil && st.Size() == v.Bytes {
		now := time.Now()
		os.Chtimes(path, now, now) // the mtime is the LRU clock: atime is often not kept
		return path, nil
	}
	reuse, _ := c.cachedSnapshots(v.Model) // a block snapshot reuses the other cached versions
	if _, err := c.download(ctx, store, v, path, reuse); err != nil {
		return "", err
	}
	return path, c.evict()
}

// Open returns a DuckDB database reading version v (from Version) from
// source: the cached snapshot opened read-only, or the Parquet archive.
// The caller closes it. A query on it never touches the model's live file.
//
// Errors: as Pull; for FromParquet also an error for a table that lists
// no data file (versions from before the archive).
func (c *Client) Open(ctx context.Context, v controldb.Version, source Source) (*sql.DB, error) {
	switch source {
	case FromSnapshot:
		path, err := c.Snapshot(ctx, v)
		if err != nil {
			return nil, err
		}
		return duck.Open(ctx, path, duck.Options{ReadOnly: true})
	case FromParquet:
		return c.archiveDB(ctx, v)
	}
	return nil, fmt.Errorf("%w: client: unknown source %d", model.ErrInvalid, source)
}

// Rows are the result of Query; Close closes the snapshot too.
type Rows struct {
	*sql.Rows
	db *sql.DB
}

// Close closes the rows and the snapshot they read.
func (r *Rows) Close() error {
	return errors.Join(r.Rows.Close(), r.db.Close())
}

// Query runs the SELECT q with the bound parameters args on version n of
// model m (0: the latest), read from its snapshot (see Snapshot), as
// teactl query does. q must be one SELECT (or WITH … SELECT): anything
// else is refused before anything is downloaded.
//
// Errors: model.ErrInvalid for a statement that is not one SELECT, or
// that DuckDB refuses; otherwise as Version and Pull.
func (c *Client) Query(ctx context.Context, m string, n int64, q string, args ...any) (*Rows, error) {
	if err := functions.ValidateSelect(q); err != nil {
		return nil, err
	}
	v, err := c.Version(ctx, m, n)
	if err != nil {
		return nil, err
	}
	db, err := c.Open(ctx, v, FromSnapshot)
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		db.Close()
		msg, _, _ := strings.Cut(err.Error(), "\n") // DuckDB's message ends with the query and a caret line
		return nil, fmt.Errorf("%w: %s", model.ErrInvalid, msg)
	}
	return &Rows{Rows: rows, db: db}, nil
}

// DataFiles returns the Parquet data files of table t of v, whose union
// is the table's rows (every version has some: migration 00005 lists the
// one Parquet object of older versions); an error naming the table when
// it lists none.
func DataFiles(v controldb.Version, t controldb.Table) ([]controldb.DataFile, error) {
	if len(t.Files) > 0 {
		return t.Files, nil
	}
	return nil, fmt.Errorf("table %s of %s version %d lists no Parquet data file in Postgres: its archive cannot be read (read the snapshot instead: teactl query without --source parquet)", t.Name, v.Model, v.Version)
}

// ParquetSelect is the SELECT that reads table t from the Parquet files
// at uris, in order (DuckDB's read_parquet of the list), with the columns
// the archive holds encoded (HUGEINT as text, …) cast back to the types
// of t's schema (an unreadable schema: the columns as stored).
func ParquetSelect(t controldb.Table, uris []string) string {
	var cols []snapshot.Column
	json.Unmarshal(t.Schema, &cols)
	quoted := make([]string, len(uris))
	for i, u := range uris {
		quoted[i] = duck.Literal(u)
	}
	return "SELECT " + snapshot.RestoreList(cols) + " FROM read_parquet([" + strings.Join(quoted, ", ") + "])"
}

// archiveDB returns an in-memory DuckDB with one view per table of v over
// all its Parquet data files from the archive, each downloaded into the
// cache once (parquet/<sha256>.parquet: files are content-addressed,
// shared by versions and stacks) and verified by its sha256, so a query
// reads exactly what any other engine would.
func (c *Client) archiveDB(ctx context.Context, v controldb.Version) (*sql.DB, error) {
	store, err := c.store()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.opts.CacheDir, "parquet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := duck.Open(ctx, "", duck.Options{AllowedDirs: []string{dir}})
	if err != nil {
		return nil, err
	}
	downloaded := false
	for _, t := range v.Tables {
		files, err := DataFiles(v, t)
		if err != nil {
			db.Close()
			return nil, err
		}
		paths := make([]string, len(files))
		for i, f := range files {
			path, got, err := c.cachedParquet(ctx, store, dir, f)
			if err != nil {
				db.Close()
				return nil, fmt.Errorf("table %s of %s version %d: %w", t.Name, v.Model, v.Version, err)
			}
			paths[i], downloaded = path, downloaded || got
		}
		if _, err := db.ExecContext(ctx, "CREATE VIEW "+duck.Ident(t.Name)+" AS "+ParquetSelect(t, paths)); err != nil {
			db.Close()
			return nil, err
		}
	}
	if downloaded {
		if err := c.evict(); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

// cachedParquet returns the cache file of data file f under dir and
// whether it was downloaded now: downloaded when missing or not matching
// f's sha256 (a corrupt object is removed and an error).
func (c *Client) cachedParquet(ctx context.Context, store objstore.Store, dir string, f controldb.DataFile) (string, bool, error) {
	path := filepath.Join(dir, f.SHA256+".parquet")
	c.use(path)
	if sum, _, err := snapshot.FileSHA256(path); err == nil && sum == f.SHA256 {
		now := time.Now()
		os.Chtimes(path, now, now) // the mtime is the LRU clock
		return path, false, nil
	}
	got, err := objstore.GetFile(ctx, store, f.Key, path)
	if err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return "", false, fmt.Errorf("Parquet data file %s is missing from the object store: %w", f.Key, err)
		}
		return "", false, unreachable(fmt.Errorf("download %s: %w", f.Key, err))
	}
	if got != f.SHA256 {
		os.Remove(path)
		return "", false, mark(fmt.Errorf("Parquet data file %s is corrupt: sha256 %s, Postgres records %s", f.Key, got, f.SHA256), ErrCorrupt)
	}
	return path, true, nil
}

// evict bounds the cache to Options.CacheBytes, keeping what this client
// opened.
func (c *Client) evict() error {
	return evictLRU(c.opts.CacheDir, c.opts.CacheBytes, c.used())
}

// evictLRU removes the least recently used (oldest mtime) files of the
// cache under base until the rest fit in limit bytes, except keep. Files
// whose name starts with '.' are downloads in progress and are left
// alone.
func evictLRU(base string, limit uint64, keep []string) error {
	type entry struct {
		path string
		size int64
		used time.Time
	}
	var all []entry
	var total uint64
	for _, sub := range []string{"snapshots", "parquet"} {
		err := filepath.WalkDir(filepath.Join(base, sub), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil // removed meanwhile
			}
			all = append(all, entry{path, info.Size(), info.ModTime()})
			total += uint64(info.Size())
			return nil
		})
		if err != nil {
			return fmt.Errorf("cache %s: %w", base, err)
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, f := range all {
		if total <= limit {
			break
		}
		if slices.Contains(keep, f.path) {
			continue
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cache: evict: %w", err)
		}
		if key, err := mapEntryUnder(base, f.path); err == nil {
			os.Remove(key) // its block map, if Pull recorded one
		}
		total -= uint64(f.size)
	}
	return nil
}
