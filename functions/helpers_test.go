package functions

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/udf"
)

// testModel is a model's DuckDB file opened the way the db-manager opens
// it (external access off except the staging directory), with a directory
// standing in for the object store.
type testModel struct {
	t        testing.TB
	db       *sql.DB
	conn     *sql.Conn
	staging  string // DuckDB may read here (allowed_directories)
	store    string // object store: key k is the file store/k
	allowSQL bool
	sources  map[string]string // Env.Sources
	fetched  []string          // uris Payload fetched
	// wasm, limits and modules are Env.WASM, WASMLimits and Modules.
	wasm    *udf.Host
	limits  udf.Limits
	modules ModuleStore
	// reads maps an alias to the local file attach attaches.
	reads map[string]string
}

func newModel(t testing.TB) *testModel {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	m := &testModel{t: t, staging: filepath.Join(dir, "staging"), store: filepath.Join(dir, "store")}
	for _, d := range []string{m.staging, m.store} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	db, err := duck.Open(ctx, filepath.Join(dir, "m.duckdb"), duck.Options{Threads: 1, MemoryLimit: "256MB", AllowedDirs: []string{m.staging}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.db, m.conn = db, conn
	return m
}

// env is the Env the db-manager would pass: Payload copies store/uri to
// staging/uri.
func (m *testModel) env() Env {
	return Env{
		Conn:       m.conn,
		AllowSQL:   m.allowSQL,
		Sources:    m.sources,
		WASM:       m.wasm,
		WASMLimits: m.limits,
		Modules:    m.modules,
		Payload: func(ctx context.Context, uri string) (string, error) {
			m.fetched = append(m.fetched, uri)
			src, err := os.Open(filepath.Join(m.store, filepath.FromSlash(uri)))
			if err != nil {
				return "", fmt.Errorf("test store: %w", model.ErrNotFound)
			}
			defer src.Close()
			dst := filepath.Join(m.staging, filepath.FromSlash(uri))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return "", err
			}
			out, err := os.Create(dst)
			if err != nil {
				return "", err
			}
			defer out.Close()
			if _, err := io.Copy(out, src); err != nil {
				return "", err
			}
			return dst, nil
		},
	}
}

// apply runs one function in its own transaction, as the db-manager does
// for a batch of one: BEGIN, Apply, COMMIT, or ROLLBACK on error.
func (m *testModel) apply(fn, args string) (Result, error) {
	m.t.Helper()
	return m.applyBatch(request{fn, args})
}

type request struct{ fn, args string }

// applyBatch applies reqs in one transaction; on the first error it rolls
// back everything and returns the error.
func (m *testModel) applyBatch(reqs ...request) (Result, error) {
	m.t.Helper()
	ctx := context.Background()
	// As the db-manager does: a request with reads is alone in its
	// transaction; they are attached before it and detached after it.
	if len(reqs) == 1 {
		if reads := ReadsOf(json.RawMessage(reqs[0].args)); len(reads) > 0 {
			f, err := Lookup(reqs[0].fn)
			if err != nil {
				m.t.Fatal(err)
			}
			if _, err := f.Decode(json.RawMessage(reqs[0].args)); err != nil {
				return Result{}, err
			}
			detach, err := AttachReads(ctx, m.conn, reads, func(_ context.Context, alias string) (string, error) {
				if p, ok := m.reads[alias]; ok {
					return p, nil
				}
				return "", fmt.Errorf("test: no read %s", alias)
			})
			if err != nil {
				return Result{}, err
			}
			defer detach()
		}
	}
	if _, err := m.conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		m.t.Fatal(err)
	}
	env := m.env()
	env.Tables = NewTableCache() // one per transaction, as the db-manager does
	var last Result
	for _, r := range reqs {
		f, err := Lookup(r.fn)
		if err != nil {
			m.t.Fatal(err)
		}
		c, err := f.Decode(json.RawMessage(r.args))
		var res Result
		if err == nil {
			res, err = c.Apply(ctx, env)
		}
		if err != nil {
			if _, rerr := m.conn.ExecContext(ctx, "ROLLBACK"); rerr != nil {
				m.t.Fatalf("rollback: %v", rerr)
			}
			return Result{}, err
		}
		last = res
	}
	if _, err := m.conn.ExecContext(ctx, "COMMIT"); err != nil {
		m.t.Fatalf("commit: %v", err)
	}
	return last, nil
}

// mustApply is apply for a request that must succeed.
func (m *testModel) mustApply(fn, args string) Result {
	m.t.Helper()
	res, err := m.apply(fn, args)
	if err != nil {
		m.t.Fatalf("%s %s: %v", fn, args, err)
	}
	return res
}

// applyErr is apply for a request that must fail with an error wrapping
// model.ErrInvalid and containing want.
func (m *testModel) applyErr(fn, args, want string) error {
	m.t.Helper()
	_, err := m.apply(fn, args)
	if err == nil {
		m.t.Fatalf("%s %s: no error, want one containing %q", fn, args, want)
	}
	if !errors.Is(err, model.ErrInvalid) {
		m.t.Errorf("%s %s: error %v does not wrap model.ErrInvalid", fn, args, err)
	}
	if !strings.Contains(err.Error(), want) {
		m.t.Errorf("%s %s: error %q does not contain %q", fn, args, err, want)
	}
	return err
}

// rows runs q and renders each row as its values joined by "|" (NULL as
// "NULL").
func (m *testModel) rows(q string, args ...any) []string {
	m.t.Helper()
	return queryRows(m.t, m.conn, q, args...)
}

func queryRows(t testing.TB, conn *sql.Conn, q string, args ...any) []string {
	t.Helper()
	rs, err := conn.QueryContext(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out []string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			if v == nil {
				parts[i] = "NULL"
			} else {
				parts[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// exec runs q outside any function (test setup).
func (m *testModel) exec(q string, args ...any) {
	m.t.Helper()
	if _, err := m.conn.ExecContext(context.Background(), q, args...); err != nil {
		m.t.Fatalf("%s: %v", q, err)
	}
}

// put stores data in the test object store under key uri.
func (m *testModel) put(uri string, data []byte) {
	m.t.Helper()
	p := filepath.Join(m.store, filepath.FromSlash(uri))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		m.t.Fatal(err)
	}
}

// copyTo writes the result of query to the test object store under key uri
// with an unrestricted DuckDB (COPY … TO, options like "FORMAT parquet").
func (m *testModel) copyTo(uri, query, options string) {
	m.t.Helper()
	p := filepath.Join(m.store, filepath.FromSlash(uri))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if _, err := maker(m.t).ExecContext(context.Background(), "COPY ("+query+") TO "+duck.Literal(p)+" ("+options+")"); err != nil {
		m.t.Fatalf("make %s: %v", uri, err)
	}
}

// maker is an unrestricted in-memory DuckDB that writes test files.
var makerDB struct {
	once sync.Once
	db   *sql.DB
	err  error
}

func maker(t testing.TB) *sql.DB {
	t.Helper()
	makerDB.once.Do(func() {
		makerDB.db, makerDB.err = duck.Open(context.Background(), "", duck.Options{Threads: 1, MemoryLimit: "128MB", ExternalAccess: true})
	})
	if makerDB.err != nil {
		t.Fatal(makerDB.err)
	}
	return makerDB.db
}

// mustJSON marshals v.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
