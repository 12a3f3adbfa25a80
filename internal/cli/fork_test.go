package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// TestModelForkCommand: teactl model fork creates the fork at the given
// version (a pull of it is the source version's bytes, its log names the
// source as parent) and refuses an existing model, an unknown model or
// version and a whole-file version with one line each.
func TestModelForkCommand(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "fsrc"})
	b := newBlockModel(t, s, "fsrc", 5000)
	b.publish("")
	b.publish("INSERT INTO t SELECT range + 5000, 'new', 0.5 FROM range(100)")
	env := stackEnv(t, s)
	out, errOut, code := teactl(t, ctx, env, "model", "fork", "fsrc", "fdst", "--version", "1")
	if code != 0 || out != "model fdst forked from fsrc@1 (shares the blocks of fsrc; keeps 10 versions)\n" {
		t.Fatalf("fork: exit %d, %q, %q", code, out, errOut)
	}
	path := filepath.Join(t.TempDir(), "fdst.duckdb")
	if p := pullJSON(t, env, "fdst", "-o", path); p.Version != 1 {
		t.Fatalf("pull fdst: %+v", p)
	}
	sameBytes(t, b.files[1], path)
	if out, _, _ := teactl(t, ctx, env, "log", "fdst"); !strings.Contains(out, "fsrc@1 (forked)") {
		t.Errorf("log fdst: %q", out)
	}
	out, _, _ = teactl(t, ctx, env, "model", "show", "fdst")
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "forked from fsrc@1 block namespace fsrc") {
		t.Errorf("model show fdst: %q", out)
	}
	s.CreateModel(t, controldb.Model{ID: "fold"})
	publish(t, s, "fold", 1, 3)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"fsrc", "fdst"}, "model fdst exists already"},
		{[]string{"fsrc@1", "fsrc"}, "fork fsrc to itself"},
		{[]string{"nope", "x"}, `model "nope": it does not exist`},
		{[]string{"fsrc", "x", "--version", "9"}, "cannot fork fsrc@9: no such version"},
		{[]string{"fsrc@2", "x", "--version", "1"}, "give one"},
		{[]string{"fold", "x"}, "whole-file snapshot"},
	} {
		_, errOut, code := teactl(t, ctx, env, append([]string{"model", "fork"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("fork %v: exit %d, %q; want one line with %q", c.args, code, errOut, c.want)
		}
	}
	if _, err := s.Ctl.GetModel(ctx, "x"); err == nil {
		t.Error("a refused fork left model x")
	}
}
