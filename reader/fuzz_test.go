package reader

import (
	"errors"
	"testing"

	"github.com/teatree/teatree/model"
)

// FuzzDecodeRequest: a query request from the network decodes or is
// refused with model.ErrInvalid, never a panic.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"sql":"SELECT 1"}`))
	f.Add([]byte(`{"sql":"SELECT * FROM t","version":3,"max_rows":10,"max_bytes":100,"timeout_ms":5,"render":"csv"}`))
	f.Add([]byte(`{"sql":"DELETE FROM t"}`))
	f.Add([]byte(`{"sql":"SELECT 1","extra":1}`))
	f.Add([]byte(`{"sql":"SELECT 1"} {}`))
	f.Add([]byte(`{"version":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if r.Version < 0 || r.MaxRows < 0 || r.MaxBytes < 0 || r.TimeoutMS < 0 {
			t.Fatalf("accepted negative numbers: %+v", r)
		}
	})
}
