package objstore

import (
	"context"
	"fmt"

	"github.com/teatree/teatree/model"
)

// DeleteStaged deletes the payloads staged for request requestID to model
// m: every object under model.StagingPrefix(m, requestID), and nothing
// else. It returns how many objects it deleted. An invalid model or
// request id deletes nothing and returns an error wrapping
// model.ErrInvalid.
func DeleteStaged(ctx context.Context, s Store, m, requestID string) (int, error) {
	if err := model.ValidateID(m); err != nil {
		return 0, err
	}
	if err := model.ValidateRequestID(requestID); err != nil {
		return 0, err
	}
	prefix := model.StagingPrefix(m, requestID)
	if err := ValidateKey(prefix + "x"); err != nil { // request ids "." and ".."
		return 0, err
	}
	objs, err := s.List(ctx, prefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range objs {
		if err := s.Delete(ctx, o.Key); err != nil {
			return n, fmt.Errorf("objstore: delete staged payload: %w", err)
		}
		n++
	}
	return n, nil
}
