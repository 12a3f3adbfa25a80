package dbmanager_test

import (
	"context"
	"os"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

func objectFile(ctx context.Context, s *stacktest.Stack, key, path string) (string, error) {
	return objstore.GetFile(ctx, s.Store, key, path)
}

// versionFile writes the snapshot of v to path, as a reader would.
func versionFile(ctx context.Context, s *stacktest.Stack, v controldb.Version, path string) error {
	_, _, err := snapshot.Fetch(ctx, s.Store, v, path, blocks.FetchOptions{})
	return err
}

func removeAll(dir string) error { return os.RemoveAll(dir) }
