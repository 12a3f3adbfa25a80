package dbmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
	"github.com/teatree/teatree/udf"
)

// moduleDir holds local copies of the model's modules, by digest.
func (c *Config) moduleDir() string { return filepath.Join(c.dir(), "modules") }

// wasmEnv sets the WebAssembly fields of env.
func (m *Manager) wasmEnv(env *functions.Env) {
	env.WASM = m.wasm
	env.WASMLimits = udf.Limits{MemoryPages: uint32(m.cfg.WasmMemoryMiB) * 16, Timeout: m.cfg.WasmTimeout}
	env.Modules = moduleStore{m}
}

// moduleStore is the db-manager's functions.ModuleStore: the object store
// (snapshot.ModuleKey) for the bytes, Postgres (controldb.RecordModule) for the
// registrations, a local copy per digest for the calls.
type moduleStore struct{ m *Manager }

var _ functions.ModuleStore = moduleStore{}

// Put records the registration, then uploads wasm unless its key exists
// already. Recording first is what garbage collection needs
// (retention.Run keeps a module a name points at): once the row is in
// Postgres, a run no longer deletes the object this registration may
// have found there. Errors are transient (the request is retried).
func (s moduleStore) Put(ctx context.Context, name string, info udf.Info, wasm []byte) error {
	if s.m.replay {
		return nil // a replay (verify.go) changes nothing: the original registration stored it under its digest
	}
	if err := s.m.ctl.RecordModule(ctx, controldb.Module{Model: s.m.cfg.Model, Name: name, Digest: info.Digest, Exports: info.Exports}); err != nil {
		return transientError{err}
	}
	key := snapshot.ModuleKey(s.m.namespace, info.Digest)
	if _, err := s.m.store.Stat(ctx, key); errors.Is(err, model.ErrNotFound) {
		if err := s.m.store.Put(ctx, key, bytes.NewReader(wasm), int64(len(wasm))); err != nil {
			return transientError{fmt.Errorf("dbmanager: upload module %s: %w", key, err)}
		}
	} else if err != nil {
		return transientError{fmt.Errorf("dbmanager: stat module %s: %w", key, err)}
	}
	return nil
}

// Get returns the module of digest from the local copy, fetched from the
// object store when missing; the bytes are checked against the digest.
func (s moduleStore) Get(ctx context.Context, digest string) ([]byte, error) {
	path := filepath.Join(s.m.cfg.moduleDir(), digest+".wasm")
	if b, err := os.ReadFile(path); err == nil && udf.Digest(b) == digest {
		return b, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, transientError{fmt.Errorf("dbmanager: module dir: %w", err)}
	}
	key := snapshot.ModuleKey(s.m.namespace, digest)
	if _, err := objstore.GetFile(ctx, s.m.store, key, path); err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return nil, fmt.Errorf("%w: module %s is not in the object store (%s): register it again", model.ErrInvalid, digest, key)
		}
		return nil, transientError{fmt.Errorf("dbmanager: fetch module %s: %w", key, err)}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, transientError{err}
	}
	if udf.Digest(b) != digest {
		os.Remove(path)
		return nil, fmt.Errorf("%w: module %s in the object store has other bytes (digest %s)", model.ErrInvalid, key, udf.Digest(b))
	}
	return b, nil
}
