package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
)

// tmpPrefix marks files being written; List skips them.
const tmpPrefix = ".put-"

// Dir is a Store in a local directory: the object with key k is the file
// <root>/<k>. Put writes a temporary file, syncs it and renames it into
// place, so a crash never leaves a partial object.
type Dir struct {
	root string
}

var _ Store = (*Dir)(nil)

// NewDir returns the store rooted at dir, creating the directory.
func NewDir(dir string) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// URI implements Store: the absolute path of the object's file.
func (d *Dir) URI(key string) string {
	return filepath.Join(d.root, filepath.FromSlash(key))
}

func notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("objstore: %s: %w", key, err)
}

// Put implements Store: the object is durable when Put returns (its file
// and its directory are synced).
func (d *Dir) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := d.put(ctx, key, r, size)
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// put writes the object's file, syncs it and renames it into place, and
// returns its path; its directory entry is durable once the directory is
// synced (Put, Batch.Sync).
func (d *Dir) put(ctx context.Context, key string, r io.Reader, size int64) (string, error) {
	p, err := d.path(key)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), tmpPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, ctxReader{ctx, r})
	if err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if size >= 0 && n != size {
		return "", fmt.Errorf("objstore: put %s: read %d bytes, want %d", key, n, size)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", key, err)
	}
	return p, nil
}

// dirSyncs counts the directory syncs of directory stores (tests).
var dirSyncs atomic.Int64

func syncDir(dir string) error {
	dirSyncs.Add(1)
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Get implements Store.
func (d *Dir) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(key, err)
	}
	return f, nil
}

// Stat implements Store.
func (d *Dir) Stat(ctx context.Context, key string) (Info, error) {
	p, err := d.path(key)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err == nil && fi.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return Info{}, notFound(key, err)
	}
	return Info{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// List implements Store.
func (d *Dir) List(ctx context.Context, prefix string) ([]Info, error) {
	// Walk the deepest directory the prefix names, filter by prefix.
	base := path.Dir(prefix + "x")
	if base == "." {
		base = ""
	}
	start := filepath.Join(d.root, filepath.FromSlash(base))
	var out []Info
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, Info{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: list %q: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store. Directories left empty are removed.
func (d *Dir) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty
			break
		}
	}
	return nil
}
