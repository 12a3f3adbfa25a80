package dbmanager_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
)

// TestSourceDisconnectFailsAlone: in one batch, a Postgres source whose
// server ends the connection after 99,997 rows (3 to 99,999: 1 and 2 are
// the inline rows' keys, which DuckDB would refuse first) fails its request alone
// and leaves none of its rows (DuckDB's scan had inserted some into the
// open transaction); the requests around it, another read of the same
// source among them, are applied and published; a source the db-manager
// does not know fails its request with a message naming the known ones.
func TestSourceDisconnectFailsAlone(t *testing.T) {
	src := pgtest.NewDatabase(t)
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	if _, err := pg.Exec(ctx, `CREATE TABLE customers (n int PRIMARY KEY, v text); INSERT INTO customers VALUES (1000001, 'ann'), (1000002, 'bob'), (1000003, NULL)`); err != nil {
		t.Fatal(err)
	}
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "crm"}).ID
	dies := "SELECT g AS n, CASE WHEN g = 100000 THEN pg_terminate_backend(pg_backend_pid())::text ELSE 'row ' || g END AS v FROM generate_series(3, 200000) g"
	s.Submit(t,
		createTable(m, "create-1"),
		appendRow(m, "row-1", 1),
		stacktest.Request(m, "src-dies", "append", map[string]any{"table": "t", "source": map[string]any{"name": "crm", "query": dies}}),
		stacktest.Request(m, "src-ok", "append", map[string]any{"table": "t", "source": map[string]any{"name": "crm", "table": "customers"}}),
		stacktest.Request(m, "src-unknown", "append", map[string]any{"table": "t", "source": map[string]any{"name": "erp", "table": "customers"}}),
		appendRow(m, "row-2", 2),
	)
	cfg := dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond,
		Sources: map[string]string{"crm": src}}
	mgr, err := dbmanager.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("db-manager: %v", err)
		}
	})
	got := s.Outcomes(t, m, wait, "create-1", "row-1", "src-dies", "src-ok", "src-unknown", "row-2")
	for id, want := range map[string]model.Status{"create-1": model.StatusApplied, "row-1": model.StatusApplied, "src-ok": model.StatusApplied, "row-2": model.StatusApplied,
		"src-dies": model.StatusFailed, "src-unknown": model.StatusFailed} {
		if got[id].Status != want {
			t.Errorf("%s: %s (%s), want %s", id, got[id].Status, got[id].Error, want)
		}
	}
	t.Logf("src-dies: %s", got["src-dies"].Error)
	if e := got["src-dies"].Error; !strings.Contains(e, "source crm: copy after") || strings.Contains(e, "after 0 rows") {
		t.Errorf("src-dies error %q does not name the source", e)
	}
	if e := got["src-unknown"].Error; !strings.Contains(e, `unknown source "erp": this db-manager knows crm`) {
		t.Errorf("src-unknown error %q", e)
	}
	db, _ := latest(t, s, m)
	var n, maxN int64
	if err := db.QueryRow("SELECT count(*), max(n) FROM t").Scan(&n, &maxN); err != nil || n != 5 || maxN != 1000003 {
		t.Errorf("t holds %d rows up to %d (%v), want the 2 inline rows and the 3 customers", n, maxN, err)
	}
}
