package cli

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// TestModuleList: teactl module list shows the registrations Postgres
// holds, as a table and as JSON; a missing model is an error; module
// register refuses a file that is not WebAssembly before connecting.
func TestModuleList(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	s.CreateModel(t, controldb.Model{ID: "geo"})
	digest := strings.Repeat("ab", 32)
	if err := s.Ctl.RecordModule(ctx, controldb.Module{Model: "geo", Name: "gc", Digest: digest, Exports: []string{"teatree_alloc", "teatree_process"}}); err != nil {
		t.Fatal(err)
	}
	env := stackEnv(t, s)
	out, stderr, code := teactl(t, ctx, env, "module", "list", "geo")
	if code != 0 || !strings.Contains(out, "gc") || !strings.Contains(out, digest) || !strings.Contains(out, "teatree_alloc,teatree_process") {
		t.Fatalf("module list: code %d, stdout %q, stderr %q", code, out, stderr)
	}
	out, _, code = teactl(t, ctx, env, "module", "list", "geo", "--json")
	var ms []controldb.Module
	if code != 0 || json.Unmarshal([]byte(out), &ms) != nil || len(ms) != 1 || ms[0].Digest != digest {
		t.Fatalf("module list --json: code %d, %q", code, out)
	}
	if _, stderr, code := teactl(t, ctx, env, "module", "list", "nope"); code == 0 || !strings.Contains(stderr, "does not exist") {
		t.Errorf("module list of a missing model: code %d, stderr %q", code, stderr)
	}
	file := t.TempDir() + "/x.wasm"
	if err := os.WriteFile(file, []byte("PAR1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := teactl(t, ctx, env, "module", "register", "geo", "gc", file); code == 0 || !strings.Contains(stderr, "is not a WebAssembly module") {
		t.Errorf("module register of a non-module: code %d, stderr %q", code, stderr)
	}
}
