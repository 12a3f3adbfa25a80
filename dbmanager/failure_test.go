package dbmanager

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// TestJudgeDuckDBErrors maps errors DuckDB really returns to verdicts: what
// a request asked for fails it, what the machine ran out of or a
// concurrent transaction caused is retried.
func TestJudgeDuckDBErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := duck.Open(ctx, filepath.Join(dir, "judge.duckdb"), duck.Options{Threads: 1, MemoryLimit: "32MB", ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) error {
		_, err := db.ExecContext(ctx, q)
		return err
	}
	if err := exec(`CREATE TABLE k (n INTEGER PRIMARY KEY, v VARCHAR); INSERT INTO k VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	// bigList needs far more than 32MB: a list aggregate does not spill.
	const bigList = `SELECT list(i)[1] FROM range(20000000) t(i)`

	cases := []struct {
		name     string
		err      func(t *testing.T) error
		wantType duckdb.ErrorType
		want     verdict
	}{
		{"constraint", func(*testing.T) error { return exec(`INSERT INTO k VALUES (1, 'b')`) }, duckdb.ErrorTypeConstraint, failed},
		{"conversion", func(*testing.T) error { return exec(`SELECT 'one'::INTEGER`) }, duckdb.ErrorTypeConversion, failed},
		{"binder", func(*testing.T) error { return exec(`SELECT nope FROM k`) }, duckdb.ErrorTypeBinder, failed},
		{"parser", func(*testing.T) error { return exec(`SELEC 1`) }, duckdb.ErrorTypeParser, failed},
		{"catalog", func(*testing.T) error { return exec(`SELECT * FROM missing`) }, duckdb.ErrorTypeCatalog, failed},
		{"out of memory", func(*testing.T) error { return exec(bigList) }, duckdb.ErrorTypeOutOfMemory, retry},
		{"io", func(*testing.T) error {
			return exec(`COPY k TO ` + duck.Literal(filepath.Join(dir, "no", "such", "dir", "k.csv")))
		}, duckdb.ErrorTypeIO, retry},
		{"interrupt", func(t *testing.T) error {
			// Interrupted through another context than the one judged:
			// not our shutdown, still retried.
			qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			var sum float64
			return db.QueryRowContext(qctx, `SELECT sum(sqrt(i)) FROM range(100000000000) t(i)`).Scan(&sum)
		}, duckdb.ErrorTypeInterrupt, retry},
		{"transaction conflict", func(t *testing.T) error {
			a, b := conn(t, db), conn(t, db)
			for _, q := range []string{"BEGIN", "UPDATE k SET v = 'x' WHERE n = 1"} {
				if _, err := a.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			defer a.ExecContext(ctx, "ROLLBACK")
			if _, err := b.ExecContext(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			defer b.ExecContext(ctx, "ROLLBACK")
			_, err := b.ExecContext(ctx, "UPDATE k SET v = 'y' WHERE n = 1")
			return err
		}, duckdb.ErrorTypeTransaction, retry},
		{"out of memory in a request", func(t *testing.T) error {
			// Through the sql function, as the applier calls it: its
			// error keeps DuckDB's in the chain.
			fn, err := functions.Lookup("sql")
			if err != nil {
				t.Fatal(err)
			}
			c := conn(t, db)
			args, _ := json.Marshal(map[string]string{"sql": "CREATE TABLE big AS " + bigList})
			call, err := fn.Decode(args)
			if err != nil {
				t.Fatal(err)
			}
			_, err = call.Apply(ctx, functions.Env{Conn: c, AllowSQL: true, Tables: functions.NewTableCache()})
			return err
		}, duckdb.ErrorTypeOutOfMemory, retry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.err(t)
			var de *duckdb.Error
			if !errors.As(err, &de) || de.Type != c.wantType {
				t.Fatalf("error %v (%T); want a DuckDB error of type %d", err, err, c.wantType)
			}
			if got := judge(ctx, err); got != c.want {
				t.Errorf("judge(%v) = %s, want %s", err, got, c.want)
			}
			// Marked the request's fault by a function: memory, interrupts
			// and conflicts are retried still; an I/O error is the file's.
			want := failed
			if c.want == retry && c.wantType != duckdb.ErrorTypeIO {
				want = retry
			}
			if got := judge(ctx, fmt.Errorf("%w: append: read payload: %w", model.ErrInvalid, err)); got != want {
				t.Errorf("judge(marked invalid: %v) = %s, want %s", err, got, want)
			}
		})
	}
}

// TestJudgeOther maps the errors that are not DuckDB's.
func TestJudgeOther(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(live)
	cancel()
	plain := errors.New("staged payload staging/m/r/f.parquet does not exist")
	cases := []struct {
		name string
		ctx  context.Context
		err  error
		want verdict
	}{
		{"nil", live, nil, applied},
		{"invalid", live, fmt.Errorf("%w: append: table t does not exist", model.ErrInvalid), failed},
		{"plain", live, plain, failed},
		{"transient", live, transientError{plain}, retry},
		{"shutdown", done, plain, retry},
		{"context error", live, fmt.Errorf("fetch: %w", context.DeadlineExceeded), retry},
		{"fatal", live, fmt.Errorf("dbmanager: %w: lease lost", ErrFatal), fatal},
		{"fatal at shutdown", done, fmt.Errorf("dbmanager: %w: lease lost", ErrFatal), fatal},
		{"stale epoch", live, fmt.Errorf("record version: %w", model.ErrStaleEpoch), fatal},
		{"duckdb fatal", live, fmt.Errorf("commit: %w", &duckdb.Error{Type: duckdb.ErrorTypeFatal, Msg: "FATAL Error: database invalidated"}), fatal},
		{"duckdb internal", live, transientError{&duckdb.Error{Type: duckdb.ErrorTypeInternal, Msg: "INTERNAL Error: x"}}, fatal},
	}
	for _, c := range cases {
		if got := judge(c.ctx, c.err); got != c.want {
			t.Errorf("%s: judge(%v) = %s, want %s", c.name, c.err, got, c.want)
		}
	}
}

func conn(t *testing.T, db *sql.DB) *sql.Conn {
	t.Helper()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
