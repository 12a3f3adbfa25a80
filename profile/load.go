package profile

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// maxObject is the largest profile Load reads or Decode decompresses: a
// profile is at most 27.5 KB per column uncompressed, so 64 MiB is some
// 2,400 columns.
const maxObject = 64 << 20

// ErrNoProfile is returned (wrapped) by Load when a data file has no
// profile: written before profiles, or its profiling failed.
var ErrNoProfile = errors.New("no profile")

// Load reads the profiles of table's data files with the given sha256s
// (snapshot.ProfileKey under block namespace m: the model's, controldb.Version.BlockNamespace) and returns their merge.
func Load(ctx context.Context, store objstore.Store, m, table string, shas []string) (*Profile, error) {
	var ps []*Profile
	for _, sha := range shas {
		p, err := LoadFile(ctx, store, m, table, sha)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("profile: table %s has no data files", table)
	}
	return MergeAll(ps)
}

// LoadFile reads the profile of one data file of table.
func LoadFile(ctx context.Context, store objstore.Store, m, table, sha string) (*Profile, error) {
	key := snapshot.ProfileKey(m, table, sha)
	rc, err := store.Get(ctx, key)
	if errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("profile: %w for file %s of table %s (written before profiles, or profiling failed: see the db-manager's log)", ErrNoProfile, sha, table)
	}
	if err != nil {
		return nil, fmt.Errorf("profile: read %s: %w", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxObject+1))
	if err != nil {
		return nil, fmt.Errorf("profile: read %s: %w", key, err)
	}
	if len(data) > maxObject {
		return nil, fmt.Errorf("profile: %s is larger than %d bytes; not a profile", key, maxObject)
	}
	p, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w (object %s)", err, key)
	}
	return p, nil
}
