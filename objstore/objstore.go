// Package objstore is the object store behind versions and staged
// payloads: S3 (any S3-compatible server) or a local directory, behind one
// small interface. Keys are slash-separated paths such as
// models/<model>/versions/<N>/<model>.duckdb.
package objstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/teatree/teatree/model"
)

// ErrNotFound reports a missing object; it wraps model.ErrNotFound.
var ErrNotFound = fmt.Errorf("object %w", model.ErrNotFound)

// Info describes an object.
type Info struct {
	Key      string
	Size     int64 // bytes
	Modified time.Time
}

// Store is an object store. Put of an existing key replaces the object
// (callers that must not overwrite check with Stat first); readers never
// see a partly written object.
type Store interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (Info, error)
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes the object; a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// URI is the address of key for a reader outside teatree (DuckDB,
	// pyarrow, Polars, Spark): s3://bucket/prefix/key for S3, the
	// absolute file path for a directory. It does not check that the
	// object exists.
	URI(key string) string
}

// ValidateKey checks that key is a clean relative slash path.
func ValidateKey(key string) error {
	if key == "" || len(key) > 1024 {
		return fmt.Errorf("%w: object key must be 1 to 1024 bytes long, got %d", model.ErrInvalid, len(key))
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: object key %q has an empty, '.' or '..' segment", model.ErrInvalid, key)
		}
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("%w: object key %q has a control character or backslash", model.ErrInvalid, key)
		}
	}
	return nil
}

// Open opens the store at rawURL:
//
//	/path/to/dir or file:///path/to/dir      a local directory
//	s3://bucket[/prefix][?endpoint=URL&region=R&path_style=true]
//
// S3 credentials come from the AWS SDK's standard chain (AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, shared config and credentials files, web
// identity, instance roles).
func Open(ctx context.Context, rawURL string) (Store, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("%w: object store URL is empty: pass a directory or s3://bucket/prefix (--store or TEATREE_STORE_URL)", model.ErrInvalid)
	}
	if !strings.Contains(rawURL, "://") {
		return NewDir(rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: object store URL %q: %v", model.ErrInvalid, rawURL, err)
	}
	switch u.Scheme {
	case "file":
		return NewDir(u.Path)
	case "s3":
		q := u.Query()
		cfg := S3Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: q.Get("endpoint"), Region: q.Get("region")}
		if v := q.Get("path_style"); v != "" {
			if cfg.PathStyle, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("%w: object store URL %q: path_style must be true or false", model.ErrInvalid, rawURL)
			}
		}
		return NewS3(ctx, cfg)
	}
	return nil, fmt.Errorf("%w: object store URL %q: scheme %q is not supported: use a directory path, file:// or s3://", model.ErrInvalid, rawURL, u.Scheme)
}

// PutFile uploads the local file at path to key.
func PutFile(ctx context.Context, s Store, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return s.Put(ctx, key, f, st.Size())
}

// GetFile downloads key to the local file path, atomically (a temporary
// file in the same directory, synced and renamed), and returns the sha256
// of the content in hex.
func GetFile(ctx context.Context, s Store, key, path string) (string, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".objstore-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), rc); err != nil {
		return "", fmt.Errorf("objstore: download %s: %w", key, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
