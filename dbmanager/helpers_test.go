package dbmanager_test

import (
	"context"
	"os"

	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/objstore"
)

func objectFile(ctx context.Context, s *stacktest.Stack, key, path string) (string, error) {
	return objstore.GetFile(ctx, s.Store, key, path)
}

func removeAll(dir string) error { return os.RemoveAll(dir) }
