// Package retention keeps the last K versions of a model and deletes what
// no retained version needs: older snapshots and manifests, Parquet data
// files and snapshot blocks no retained version references. Postgres rows are
// marked expired first, so a reader never finds a version row whose objects
// are gone.
//
// # Blocks
//
// A block snapshot (controldb.FormatBlocks, package blocks) is a block map
// at the version's snapshot_uri plus block objects
// models/<model>/blocks/<sha256>[.zst] shared by every version of the model
// (blocks.ObjectKey: the map's encoding says which key). A block object is
// deleted only when
//
//   - no retained version's block map lists it in its encoding,
//   - no version expired less than the grace ago lists it (a reader
//     may be in the middle of pulling that version: its map is kept as
//     long, so the run can read it), and
//   - the object is older than the grace by the object store's
//     modification time (a version being published uploads its blocks
//     before Postgres records it).
//
// The grace is DefaultGrace (1 hour) unless the caller says otherwise
// (`teactl gc --grace`, the db-manager's --block-grace).
//
// # Data files
//
// The Parquet data files of a table (models/<model>/tables/<table>/
// <sha256>.parquet) are shared by the versions that list them (Postgres
// table data_file). A data file is deleted under the same rule as a
// block: no retained version lists it, no version expired less than the
// grace ago lists it, and the object is older than the grace. Its column
// profile (<sha256>.profile, snapshot.ProfileKey) goes with it.
//
// # Namespaces and forks
//
// Blocks and data files live under the model's block namespace
// (controldb.Model.Namespace): the model itself, or for a fork (teactl
// model fork) the namespace of its source, so a fork copies nothing. A run
// for any model of a namespace expires that model's versions and deletes
// its own version objects, then considers the blocks and data files of
// the whole namespace against the versions of every model in it, read in
// one Postgres statement (controldb.NamespaceVersions): a block a
// retained version of the source or of any fork lists stays. Since the
// db-managers of a namespace's models run GC while the others publish,
// every candidate is stat'ed again just before its delete and kept if it
// was put within the grace meanwhile.
//
// # Modules
//
// A WebAssembly module (snapshot.ModuleKey: modules/<ns>/<digest>.wasm, in
// the namespace like blocks: a fork shares its source's modules) is
// deleted when no registered name of a model of the namespace points at
// it (the latest registration of each name in Postgres, table
// wasm_module), no retained version's lineage lists it, no version expired less than the
// grace ago lists it, and the object is older than the grace.
//
// Every map read is checked against the root digest the version records
// (blocks.GetMap). If one cannot be read (missing, corrupt, unreadable),
// the run deletes no block at all and returns the error: deleting with an
// incomplete set of references could destroy a retained version. Versions
// of format "file" reference no blocks.
package retention

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// DefaultGrace is how long a block object or data file that no retained
// version references is kept after its upload and after the last version listing
// it expired: longer than a pull of a version (a 2 GiB model is about a
// minute from a local MinIO) and than the publication of one.
const DefaultGrace = time.Hour

// Result counts what a run expired and deleted.
type Result struct {
	Versions   int   // versions marked expired
	Objects    int   // snapshot, manifest, block map, Parquet and profile objects deleted
	Modules    int   // WebAssembly module objects deleted
	Blocks     int   // block objects deleted
	BlockBytes int64 // bytes of the block objects deleted
}

// Run keeps the newest keep versions of model m and deletes the blocks
// and data files of m's namespace that no version of the namespace's
// models needs (the package doc). epoch fences the Postgres
// writes (model.ErrStaleEpoch when a newer writer exists). Block objects
// and Parquet data files are deleted as the package doc says, with grace
// as the grace (0 means none: tests). An error reading a block map
// deletes no block; the other deletions of the run stand.
func Run(ctx context.Context, ctl *controldb.DB, store objstore.Store, m string, keep int, epoch int64, grace time.Duration) (Result, error) {
	res, found, err := expire(ctx, ctl, store, m, keep, epoch, grace)
	if err != nil || !found {
		return res, err
	}
	return sweep(ctx, ctl, store, m, grace, res)
}

// Expire is Run's first part: it keeps the newest keep versions of model
// m and deletes the snapshot and manifest objects of the versions older
// than the oldest retained one (a block map expired within grace stays).
// It lists only m's version objects; the sweep of the namespace's data
// files, blocks and modules, which waits out the grace, is Run's.
func Expire(ctx context.Context, ctl *controldb.DB, store objstore.Store, m string, keep int, epoch int64, grace time.Duration) (Result, error) {
	res, _, err := expire(ctx, ctl, store, m, keep, epoch, grace)
	return res, err
}

// expire is Expire; found is false when m has no retained version (Run then
// sweeps nothing).
func expire(ctx context.Context, ctl *controldb.DB, store objstore.Store, m string, keep int, epoch int64, grace time.Duration) (res Result, found bool, err error) {
	if keep < 1 {
		keep = 1
	}
	if res.Versions, err = ctl.ExpireVersions(ctx, m, keep, epoch); err != nil {
		return res, false, fmt.Errorf("retention: %w", err)
	}
	// Snapshots and manifests of versions older than the oldest retained
	// one, also those a crashed run left behind. Newer objects belong to a
	// version being published.
	oldest, found, err := ctl.OldestRetained(ctx, m)
	if err != nil {
		return res, false, fmt.Errorf("retention: %w", err)
	}
	if !found {
		return res, false, nil
	}
	// Block maps of versions expired within the grace stay: a
	// reader may be pulling them, and this run reads them below.
	recent, err := ctl.ExpiredMapsWithin(ctx, m, grace)
	if err != nil {
		return res, false, fmt.Errorf("retention: %w", err)
	}
	keepMap := map[string]bool{}
	for _, uri := range recent {
		keepMap[uri] = true
	}
	prefix := "models/" + m + "/versions/"
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return res, false, fmt.Errorf("retention: %w", err)
	}
	for _, o := range objs {
		n, _, _ := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v >= oldest || keepMap[o.Key] {
			continue
		}
		if err := store.Delete(ctx, o.Key); err != nil {
			return res, false, fmt.Errorf("retention: %w", err)
		}
		res.Objects++
	}
	return res, true, nil
}

// sweep deletes the data files, blocks and modules of m's namespace that
// no version needs (Run), adding to res.
func sweep(ctx context.Context, ctl *controldb.DB, store objstore.Store, m string, grace time.Duration, res Result) (Result, error) {
	// Data files: those of the versions expired within the grace stay (a
	// reader may be reading them), and every object younger than the grace
	// (a version being published uploads its files before Postgres lists
	// them).
	mdl, err := ctl.GetModel(ctx, m)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	ns := mdl.Namespace
	live, err := ctl.LiveDataFiles(ctx, ns, grace)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	objs, err := store.List(ctx, "models/"+ns+"/tables/")
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	for _, o := range objs {
		// A data file's column profile (snapshot.ProfileKey) lives as long
		// as the file.
		key := o.Key
		if k, ok := strings.CutSuffix(key, ".profile"); ok {
			key = k + ".parquet"
		}
		if live[key] || time.Since(o.Modified) < grace {
			continue
		}
		if ok, err := deleteIfOld(ctx, store, o.Key, grace); err != nil {
			return res, fmt.Errorf("retention: %w", err)
		} else if ok {
			res.Objects++
		}
	}
	// The versions of every model of the namespace, retained or expired
	// within the grace, in one statement (a fork of a version being
	// expired is seen, or the version is).
	vs, err := ctl.NamespaceVersions(ctx, ns, grace)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	if err := deleteModules(ctx, ctl, store, ns, grace, &res); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	if err := deleteBlocks(ctx, store, ns, vs, grace, &res); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	return res, nil
}

// deleteIfOld deletes key unless it was put less than grace ago by a
// fresh stat (another db-manager of the namespace may have put it again
// since the listing), and says whether it did. A key gone already is not
// deleted (false, nil).
func deleteIfOld(ctx context.Context, store objstore.Store, key string, grace time.Duration) (bool, error) {
	st, err := store.Stat(ctx, key)
	if errors.Is(err, model.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if time.Since(st.Modified) < grace {
		return false, nil
	}
	if err := store.Delete(ctx, key); err != nil {
		return false, err
	}
	return true, nil
}

// deleteModules deletes the module objects of namespace ns that no name
// of a model in it points at, no version of controldb.LiveModules lists
// and that are older than grace.
func deleteModules(ctx context.Context, ctl *controldb.DB, store objstore.Store, ns string, grace time.Duration, res *Result) error {
	live, err := ctl.LiveModules(ctx, ns, grace)
	if err != nil {
		return err
	}
	prefix := snapshot.ModulesPrefix(ns)
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		d, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix), ".wasm")
		if !ok || strings.Contains(d, "/") || live[d] || time.Since(o.Modified) < grace {
			continue
		}
		if ok, err := deleteIfOld(ctx, store, o.Key, grace); err != nil {
			return err
		} else if !ok {
			continue
		}
		res.Modules++
	}
	return nil
}

// deleteBlocks deletes the block objects of namespace m that none of the
// block maps of vs lists and that are older than grace. It reads every map first
// and deletes nothing if one cannot be read.
func deleteBlocks(ctx context.Context, store objstore.Store, m string, vs []controldb.Version, grace time.Duration, res *Result) error {
	refs := map[string]struct{}{} // object keys: a block is kept in the encoding its maps name
	for _, v := range vs {
		if v.SnapshotFormat != controldb.FormatBlocks {
			continue
		}
		root, err := blocks.ParseDigest(v.SHA256)
		if err != nil {
			return fmt.Errorf("%s version %d: root digest %q: %w (no block deleted)", v.Model, v.Version, v.SHA256, err)
		}
		bm, err := blocks.GetMap(ctx, store, v.SnapshotURI, root)
		if err != nil {
			return fmt.Errorf("%s version %d: %w (no block deleted)", v.Model, v.Version, err)
		}
		for d := range bm.Digests() {
			refs[blocks.ObjectKey(m, d, bm.Encoding)] = struct{}{}
		}
	}
	prefix := "models/" + m + "/blocks/"
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if _, ok := blocks.ParseObjectKey(strings.TrimPrefix(o.Key, prefix)); !ok {
			continue // not a block object: not ours to delete
		}
		if _, ok := refs[o.Key]; ok || time.Since(o.Modified) < grace {
			continue
		}
		if ok, err := deleteIfOld(ctx, store, o.Key, grace); err != nil {
			return err
		} else if !ok {
			continue
		}
		res.Blocks++
		res.BlockBytes += o.Size
	}
	return nil
}
