// Package pgtest gives tests a Postgres: the server at
// TEATREE_TEST_POSTGRES_URL when set, otherwise one private cluster
// (pgcluster) per test process, started on first use and stopped when the
// process exits (the postmaster receives SIGINT when its parent dies).
package pgtest

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/teatree/teatree/internal/pgcluster"
)

var (
	once     sync.Once
	baseURL  string
	startErr error
)

// URL returns the URL of a Postgres database that tests may create
// databases in.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if u := os.Getenv("TEATREE_TEST_POSTGRES_URL"); u != "" {
			baseURL = u
			return
		}
		dir, err := os.MkdirTemp("", "teatree-pgtest-")
		if err != nil {
			startErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			startErr = err
			return
		}
		c, err := pgcluster.Start(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			startErr = err
			return
		}
		baseURL = c.URL()
	})
	if startErr != nil {
		t.Fatalf("pgtest: %v", startErr)
	}
	return baseURL
}

// NewDatabase creates an empty database for this test, drops it when the
// test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := URL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	name := "teatree_test_" + strings.ToLower(rand.Text()[:12])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
