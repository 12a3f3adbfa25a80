// Package retention keeps the last K versions of a model and deletes what
// no retained version needs: older snapshots and manifests, and Parquet
// objects no retained version references. Postgres rows are marked expired
// first, so a reader never finds a version row whose objects are gone.
package retention

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/objstore"
)

// Result counts what a run expired and deleted.
type Result struct {
	Versions int // versions marked expired
	Objects  int // objects deleted
}

// Run keeps the newest keep versions of model m. epoch fences the Postgres
// writes (model.ErrStaleEpoch when a newer writer exists). Parquet objects
// younger than grace are left alone, so a run from outside the db-manager
// (teactl gc) cannot delete the object of a version being published.
func Run(ctx context.Context, ctl *controldb.DB, store objstore.Store, m string, keep int, epoch int64, grace time.Duration) (Result, error) {
	var res Result
	if keep < 1 {
		keep = 1
	}
	expired, err := ctl.ExpireVersions(ctx, m, keep, epoch)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	res.Versions = len(expired)
	// Snapshots and manifests of versions older than the oldest retained
	// one, also those a crashed run left behind. Newer objects belong to a
	// version being published.
	retained, err := ctl.ListVersions(ctx, m, false)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	if len(retained) == 0 {
		return res, nil
	}
	oldest := retained[0].Version
	prefix := "models/" + m + "/versions/"
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	for _, o := range objs {
		n, _, _ := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v >= oldest {
			continue
		}
		if err := store.Delete(ctx, o.Key); err != nil {
			return res, fmt.Errorf("retention: %w", err)
		}
		res.Objects++
	}
	live, err := ctl.LiveParquetURIs(ctx, m)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	objs, err = store.List(ctx, "models/"+m+"/tables/")
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	for _, o := range objs {
		if live[o.Key] || time.Since(o.Modified) < grace {
			continue
		}
		if err := store.Delete(ctx, o.Key); err != nil {
			return res, fmt.Errorf("retention: %w", err)
		}
		res.Objects++
	}
	return res, nil
}
