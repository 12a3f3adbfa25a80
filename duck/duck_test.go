package duck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenRestrictsExternalAccess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	allowed := filepath.Join(dir, "allowed")
	db, err := Open(ctx, filepath.Join(dir, "m.duckdb"), Options{Threads: 1, MemoryLimit: "256MB", AllowedDirs: []string{allowed}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var threads int64
	var mem string
	if err := db.QueryRowContext(ctx, "SELECT current_setting('threads'), current_setting('memory_limit')").Scan(&threads, &mem); err != nil {
		t.Fatal(err)
	}
	if threads != 1 || !strings.Contains(mem, "MiB") {
		t.Errorf("threads=%d memory_limit=%q, want 1 and ~256MB", threads, mem)
	}
	if _, err := db.ExecContext(ctx, "SELECT * FROM read_csv('/etc/passwd')"); err == nil {
		t.Error("read_csv('/etc/passwd') succeeded with external access off")
	}
	if _, err := db.ExecContext(ctx, "SET enable_external_access = true"); err == nil {
		t.Error("external access could be switched back on")
	}
	if err := os.MkdirAll(allowed, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "COPY (SELECT 1 AS x) TO "+Literal(filepath.Join(allowed, "x.parquet"))+" (FORMAT parquet)"); err != nil {
		t.Errorf("COPY into an allowed directory: %v", err)
	}
	if _, err := db.ExecContext(ctx, "COPY (SELECT 1 AS x) TO "+Literal(filepath.Join(dir, "x.parquet"))+" (FORMAT parquet)"); err == nil {
		t.Error("COPY outside the allowed directories succeeded")
	}
}

// TestLockedConfigurationRunsMultiStatementsInATransaction: DuckDB 1.5
// wraps a multi-statement run inside an open transaction (what COPY FROM
// DATABASE expands to) in SET GLOBAL current_transaction_invalidation_policy,
// which the locked configuration must let through.
func TestLockedConfigurationRunsMultiStatementsInATransaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(ctx, filepath.Join(dir, "m.duckdb"), Options{Threads: 1, AllowedDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"CREATE TABLE a(x INTEGER)",
		"ATTACH " + Literal(filepath.Join(dir, "copy.duckdb")) + " AS copy",
		"BEGIN TRANSACTION",
		"INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)",
		"COMMIT",
		"BEGIN TRANSACTION",
		"COPY FROM DATABASE m TO copy",
		"COMMIT",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM copy.a").Scan(&n); err != nil || n != 2 {
		t.Errorf("copy has %d rows (%v), want 2", n, err)
	}
	if _, err := conn.ExecContext(ctx, "SET GLOBAL allowed_configs = ['enable_external_access']"); err == nil {
		t.Error("allowed_configs could be changed on a locked configuration")
	}
}

func TestIdentAndLiteral(t *testing.T) {
	for _, tc := range []struct{ in, ident, lit string }{
		{"t", `"t"`, `'t'`},
		{`a"b`, `"a""b"`, `'a"b'`},
		{"o'k", `"o'k"`, `'o''k'`},
	} {
		if got := Ident(tc.in); got != tc.ident {
			t.Errorf("Ident(%q) = %s, want %s", tc.in, got, tc.ident)
		}
		if got := Literal(tc.in); got != tc.lit {
			t.Errorf("Literal(%q) = %s, want %s", tc.in, got, tc.lit)
		}
	}
}

// TestOpenUnion: a view per table over the members holding it, by name (a
// column one member lacks is NULL in its rows, a table one member lacks
// adds nothing), the members' files attached read-only, and no other file
// readable once open.
func TestOpenUnion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var members []UnionMember
	for i, stmts := range []string{
		"CREATE TABLE t (id INTEGER, v VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, 'b'); CREATE TABLE only_first (x INTEGER); INSERT INTO only_first VALUES (7)",
		"CREATE TABLE t (v VARCHAR, id INTEGER, w INTEGER); INSERT INTO t VALUES ('c', 3, 30)",
	} {
		path := filepath.Join(dir, "m"+string(rune('0'+i))+".duckdb")
		db, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(stmts); err != nil {
			t.Fatal(err)
		}
		db.Close()
		tables := []string{"t"}
		if i == 0 {
			tables = append(tables, "only_first")
		}
		members = append(members, UnionMember{Path: path, Tables: tables})
	}
	db, err := OpenUnion(ctx, members, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow(`SELECT string_agg(id || ':' || v || ':' || coalesce(w::VARCHAR, 'NULL'), ' ' ORDER BY id) || ' ' || (SELECT sum(x) FROM only_first) FROM t`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "1:a:NULL 2:b:NULL 3:c:30 7"; got != want {
		t.Errorf("union %q, want %q", got, want)
	}
	if _, err := db.Exec(`INSERT INTO db_1.t VALUES (9, 'z')`); err == nil {
		t.Error("a member file is writable")
	}
	other := filepath.Join(dir, "other.csv")
	os.WriteFile(other, []byte("a\n1\n"), 0o644)
	if err := db.QueryRow(`SELECT count(*)::VARCHAR FROM read_csv(` + Literal(other) + `)`).Scan(&got); err == nil {
		t.Error("a query on the union read another file")
	}
}
