package objstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
)

// contract runs the behaviour every Store promises.
func contract(t *testing.T, open func(t *testing.T) objstore.Store) {
	ctx := context.Background()
	t.Run("PutGetStat", func(t *testing.T) {
		s := open(t)
		data := []byte("hello, teatree")
		if err := s.Put(ctx, "models/m/versions/1/m.duckdb", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Get(ctx, "models/m/versions/1/m.duckdb")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("got %q", got)
		}
		st, err := s.Stat(ctx, "models/m/versions/1/m.duckdb")
		if err != nil || st.Size != int64(len(data)) || st.Modified.IsZero() {
			t.Fatalf("stat %+v %v", st, err)
		}
		// Put replaces.
		if err := s.Put(ctx, "models/m/versions/1/m.duckdb", strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.Stat(ctx, "models/m/versions/1/m.duckdb"); st.Size != 1 {
			t.Fatalf("not replaced: %d", st.Size)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "no/such"); !errors.Is(err, objstore.ErrNotFound) || !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("get: %v", err)
		}
		if _, err := s.Stat(ctx, "no/such"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("stat: %v", err)
		}
		if err := s.Delete(ctx, "no/such"); err != nil {
			t.Fatalf("delete of a missing object: %v", err)
		}
	})
	t.Run("ListSortedByPrefix", func(t *testing.T) {
		s := open(t)
		keys := []string{"models/a/versions/2/x", "models/a/versions/10/x", "models/a/tables/t/1.parquet", "models/ab/versions/1/x", "staging/r1/f.csv"}
		for _, k := range keys {
			if err := s.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.List(ctx, "models/a/")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range got {
			names = append(names, o.Key)
			if o.Size != int64(len(o.Key)) {
				t.Errorf("%s: size %d", o.Key, o.Size)
			}
		}
		want := []string{"models/a/tables/t/1.parquet", "models/a/versions/10/x", "models/a/versions/2/x"}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Fatalf("list models/a/: %v, want %v", names, want)
		}
		if got, _ := s.List(ctx, "models/a"); len(got) != 4 {
			t.Fatalf("list models/a: %d objects, want 4", len(got))
		}
		if got, _ := s.List(ctx, "nothing/"); len(got) != 0 {
			t.Fatalf("list of an empty prefix: %v", got)
		}
		if err := s.Delete(ctx, "staging/r1/f.csv"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.List(ctx, "staging/"); len(got) != 0 {
			t.Fatalf("after delete: %v", got)
		}
	})
	t.Run("ListModifiedTime", func(t *testing.T) {
		// The staging sweep ages objects by the modification time List
		// reports.
		s := open(t)
		before := time.Now().Add(-time.Minute)
		if err := s.Put(ctx, "staging/m/r1/f.csv", strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
		got, err := s.List(ctx, "staging/")
		if err != nil || len(got) != 1 {
			t.Fatalf("list: %v %v", got, err)
		}
		if mod := got[0].Modified; mod.Before(before) || mod.After(time.Now().Add(time.Minute)) {
			t.Fatalf("listed modification time %v, want about now", mod)
		}
	})
	t.Run("DeleteStaged", func(t *testing.T) {
		// Only the request's own prefix goes, not one of a request whose
		// id extends it, nor another model's request of the same id.
		s := open(t)
		keys := []string{"staging/m/r1/a.csv", "staging/m/r1/sub/b.csv", "staging/m/r10/c.csv", "staging/n/r1/d.csv", "staging/m/r1.csv", "models/m/r1/e"}
		for _, k := range keys {
			if err := s.Put(ctx, k, strings.NewReader(k), int64(len(k))); err != nil {
				t.Fatal(err)
			}
		}
		n, err := objstore.DeleteStaged(ctx, s, "m", "r1")
		if err != nil || n != 2 {
			t.Fatalf("DeleteStaged = %d, %v; want 2", n, err)
		}
		var left []string
		for _, p := range []string{"staging/", "models/"} {
			got, _ := s.List(ctx, p)
			for _, o := range got {
				left = append(left, o.Key)
			}
		}
		want := []string{"staging/m/r1.csv", "staging/m/r10/c.csv", "staging/n/r1/d.csv", "models/m/r1/e"}
		if strings.Join(left, ",") != strings.Join(want, ",") {
			t.Fatalf("left %v, want %v", left, want)
		}
		for _, bad := range [][2]string{{"m", ".."}, {"m", "."}, {"", "r1"}, {"m", ""}, {"m/..", "x"}} {
			if _, err := objstore.DeleteStaged(ctx, s, bad[0], bad[1]); !errors.Is(err, model.ErrInvalid) {
				t.Errorf("DeleteStaged(%q, %q): %v, want ErrInvalid", bad[0], bad[1], err)
			}
		}
	})
	t.Run("BadKeys", func(t *testing.T) {
		s := open(t)
		for _, k := range []string{"", "/abs", "a//b", "a/../b", "a/./b", "trailing/", "back\\slash", "nul\x00"} {
			if err := s.Put(ctx, k, strings.NewReader("x"), 1); !errors.Is(err, model.ErrInvalid) {
				t.Errorf("put %q: %v", k, err)
			}
		}
	})
	t.Run("LargeFileRoundTrip", func(t *testing.T) {
		// Larger than objstore.PartSize, so S3 uploads in parts.
		s := open(t)
		dir := t.TempDir()
		src := filepath.Join(dir, "big")
		data := bytes.Repeat([]byte("0123456789abcdef"), (objstore.PartSize+5<<20)/16)
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := objstore.PutFile(ctx, s, "big/file", src); err != nil {
			t.Fatal(err)
		}
		sum, err := objstore.GetFile(ctx, s, "big/file", filepath.Join(dir, "copy"))
		if err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(data)
		if sum != hex.EncodeToString(want[:]) {
			t.Fatalf("sha256 %s, want %x", sum, want)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Fatalf("GetFile left temporary files: %v", entries)
		}
	})
}

func TestDir(t *testing.T) {
	contract(t, func(t *testing.T) objstore.Store {
		s, err := objstore.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestS3(t *testing.T) {
	srv := miniotest.Shared(t)
	contract(t, func(t *testing.T) objstore.Store {
		cfg := srv.Bucket(t)
		cfg.Prefix = "pre/fix"
		s, err := objstore.NewS3(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestOpenURLs(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{"", "ftp://x/y", "s3://", "s3://b/p?path_style=maybe"} {
		if _, err := objstore.Open(ctx, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := objstore.Open(ctx, "file://"+t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func TestS3URLWithCredentialChain(t *testing.T) {
	srv := miniotest.Shared(t)
	cfg := srv.Bucket(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	s, err := objstore.Open(context.Background(), miniotest.URL(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := objstore.Open(context.Background(), miniotest.URL(cfg)); err == nil {
		t.Fatal("wrong secret accepted")
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"models/m/versions/1/m.duckdb", "a/../b", "", "/x", "a\\b"} {
		f.Add(k)
	}
	root := f.TempDir()
	s, err := objstore.NewDir(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if objstore.ValidateKey(key) != nil {
			return
		}
		// A valid key never escapes the directory of a Dir store.
		if _, err := s.Stat(context.Background(), key); err != nil && !errors.Is(err, objstore.ErrNotFound) {
			if !strings.Contains(err.Error(), "name too long") && !strings.Contains(err.Error(), "not a directory") {
				t.Fatalf("%q: %v", key, err)
			}
		}
		p := filepath.Join(root, filepath.FromSlash(key))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			t.Fatalf("%q escapes the root: %s", key, p)
		}
	})
}

// TestURI: a reader outside teatree finds an object at its URI: the file
// at the absolute path of a directory store, s3://bucket/prefix/key in S3
// (the key under the prefix for a client of the whole bucket).
func TestURI(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const key = "models/m/tables/t/abc.parquet"
	if err := dir.Put(ctx, key, strings.NewReader("data"), 4); err != nil {
		t.Fatal(err)
	}
	if u := dir.URI(key); !filepath.IsAbs(u) {
		t.Errorf("directory URI %s is not an absolute path", u)
	} else if b, err := os.ReadFile(u); err != nil || string(b) != "data" {
		t.Errorf("directory URI %s: %q, %v", u, b, err)
	}

	srv := miniotest.Shared(t)
	cfg := srv.Bucket(t)
	cfg.Prefix = "pre/fix"
	s3, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Put(ctx, key, strings.NewReader("data"), 4); err != nil {
		t.Fatal(err)
	}
	want := "s3://" + cfg.Bucket + "/pre/fix/" + key
	if u := s3.URI(key); u != want {
		t.Errorf("S3 URI %s, want %s", u, want)
	}
	cfg.Prefix = ""
	root, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Stat(ctx, "pre/fix/"+key); err != nil {
		t.Errorf("the object is not at its URI: %v", err)
	}
	if c := s3.Config(); c.AccessKey != "" || c.SecretKey != "" || c.Endpoint != cfg.Endpoint || c.Region != "us-east-1" || !c.PathStyle || c.Prefix != "pre/fix" {
		t.Errorf("Config %+v: want the settings without the credentials", c)
	}
}
