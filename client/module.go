package client

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/uuid"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// PrepareModule checks a registration of the WebAssembly module in the
// local file path under name for model m (function register_module) and
// returns it, ready for Stage and Submit: the file is staged as
// staging/<m>/<id>/module.wasm. id "" is a new UUIDv7. The module itself
// is validated by the db-manager when the request applies (its exports
// and imports, docs/wasm.md); here only its size and magic number.
//
// Errors: model.ErrInvalid for a bad model id or name, a missing file, a
// directory, a file that is not WebAssembly or too large.
func PrepareModule(m, name, path, id string) (FileRequest, error) {
	if err := model.ValidateID(m); err != nil {
		return FileRequest{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return FileRequest{}, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	if st.IsDir() {
		return FileRequest{}, fmt.Errorf("%w: %s is a directory", model.ErrInvalid, path)
	}
	if st.Size() > functions.MaxModuleBytes {
		return FileRequest{}, fmt.Errorf("%w: %s is %d bytes: a module may have at most %d", model.ErrInvalid, path, st.Size(), functions.MaxModuleBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return FileRequest{}, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	magic := make([]byte, 4)
	_, err = f.Read(magic)
	f.Close()
	if err != nil || string(magic) != "\x00asm" {
		return FileRequest{}, fmt.Errorf("%w: %s is not a WebAssembly module (it does not start with \\0asm; build one with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared)", model.ErrInvalid, path)
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return FileRequest{}, err
		}
		id = u.String()
	}
	key := model.StagingPrefix(m, id) + "module.wasm"
	args, err := json.Marshal(map[string]any{"name": name, "payload": map[string]string{"uri": key}})
	if err != nil {
		return FileRequest{}, err
	}
	r := model.Request{ID: id, Model: m, Function: "register_module", Args: args}
	if err := functions.ValidateRequest(r, false); err != nil {
		return FileRequest{}, err
	}
	return FileRequest{Request: r, Path: path, Key: key}, nil
}
