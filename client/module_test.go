package client_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
)

func TestPrepareModule(t *testing.T) {
	dir := t.TempDir()
	wasm := filepath.Join(dir, "gc.wasm")
	if err := os.WriteFile(wasm, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := client.PrepareModule("geo", "gc", wasm, "r-1")
	if err != nil {
		t.Fatal(err)
	}
	var args struct {
		Name    string `json:"name"`
		Payload struct {
			URI string `json:"uri"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(f.Request.Args, &args); err != nil {
		t.Fatal(err)
	}
	if f.Request.Function != "register_module" || args.Name != "gc" || args.Payload.URI != "staging/geo/r-1/module.wasm" || f.Key != args.Payload.URI || f.Path != wasm {
		t.Errorf("request %+v args %s key %s", f.Request, f.Request.Args, f.Key)
	}
	notWasm := filepath.Join(dir, "x.wasm")
	os.WriteFile(notWasm, []byte("PAR1"), 0o644)
	for _, c := range []struct{ m, name, path, want string }{
		{"geo", "gc", notWasm, "is not a WebAssembly module"},
		{"geo", "gc", dir, "is a directory"},
		{"geo", "gc", filepath.Join(dir, "missing.wasm"), "no such file"},
		{"Geo!", "gc", wasm, "model"},
		{"geo", "bad name", wasm, "not a valid module name"},
	} {
		_, err := client.PrepareModule(c.m, c.name, c.path, "")
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("PrepareModule(%q, %q, %q): %v; want ErrInvalid with %q", c.m, c.name, c.path, err, c.want)
		}
	}
}
