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
