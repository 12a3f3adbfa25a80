package dbmanager_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/retention"
	"github.com/teatree/teatree/snapshot"
)

// TestForkEvolvesSeparatelyUnderGC: a fork of src@2 shares src's blocks
// and data files (nothing copied but its manifest and block map), takes
// its own requests, and GC with a grace of 1 ms runs on both models'
// db-managers: every retained version of both pulls byte-identical to
// its first pull and verifies; a block only src's expired versions and
// the fork's first version list stays until the fork's version expires
// too.
func TestForkEvolvesSeparatelyUnderGC(t *testing.T) { testFork(t, false) }

// TestForkEvolvesSeparatelyUnderGCOnS3 is the same over a real MinIO.
func TestForkEvolvesSeparatelyUnderGCOnS3(t *testing.T) { testFork(t, true) }

func testFork(t *testing.T, s3 bool) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	if s3 {
		st, err := objstore.NewS3(ctx, miniotest.Shared(t).Bucket(t))
		if err != nil {
			t.Fatal(err)
		}
		s.Store = st
	}
	src := s.CreateModel(t, controldb.Model{ID: "fork-src", Retention: 2}).ID
	const dst = "fork-dst"
	cl, err := client.New(client.Options{JetStream: s.JS, Control: s.Ctl, Store: s.Store, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]string{} // model@version: sha256 of its first pull
	pullAll := func(m string) {
		t.Helper()
		vs, err := s.Ctl.ListVersions(ctx, m, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			key := fmt.Sprintf("%s@%d", m, v.Version)
			sum := pullVerified(t, s, v)
			if was, ok := first[key]; ok && was != sum {
				t.Errorf("%s pulls as %s, first as %s", key, sum, was)
			}
			first[key] = sum
		}
	}
	phase := func(m string, reqs ...model.Request) {
		t.Helper()
		cfg := testConfig(s, m)
		cfg.BlockGrace = time.Millisecond
		h := runConfig(t, s, cfg, nil)
		for _, r := range reqs {
			if n := s.SubmitWait(t, r, wait); n.Status != model.StatusApplied {
				t.Fatalf("%s: %+v", r.ID, n)
			}
		}
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
		pullAll(m)
	}
	phase(src, createTable(src, "c"), appendRow(src, "s-1", 1)) // versions 1, 2

	// Refused: unknown model, unknown or expired version, itself, an
	// existing model.
	for _, c := range []struct {
		src  string
		n    int64
		dst  string
		want error
	}{
		{"nope", 0, dst, model.ErrNotFound},
		{src, 99, dst, model.ErrNotFound},
		{src, 2, src, model.ErrInvalid},
		{src, 2, "Bad_Name", model.ErrInvalid},
	} {
		if _, err := cl.Fork(ctx, c.src, c.n, c.dst); !errors.Is(err, c.want) {
			t.Errorf("fork %s@%d to %s: %v, want %v", c.src, c.n, c.dst, err, c.want)
		}
	}
	fm, err := cl.Fork(ctx, src, 2, dst)
	if err != nil {
		t.Fatal(err)
	}
	if fm.Namespace != src || fm.ForkedFrom == nil || *fm.ForkedFrom != (model.ModelVersion{Model: src, Version: 2}) || fm.CurrentVersion != 1 {
		t.Fatalf("fork %+v", fm)
	}
	if _, err := cl.Fork(ctx, src, 2, dst); !errors.Is(err, model.ErrConflict) {
		t.Errorf("fork to an existing model: %v, want ErrConflict", err)
	}
	if _, err := cl.Fork(ctx, src, 0, dst); !errors.Is(err, model.ErrConflict) {
		t.Errorf("fork of the latest to an existing model: %v, want ErrConflict", err)
	}
	// Keep the fork's first version while src's expires.
	fm.Retention = 10
	if _, err := s.Ctl.UpdateModel(ctx, fm); err != nil {
		t.Fatal(err)
	}
	d1, err := s.Ctl.GetVersion(ctx, dst, 1)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := s.Ctl.GetVersion(ctx, src, 2)
	if d1.SHA256 != s2.SHA256 || d1.Lineage == nil || d1.Lineage.ParentModel != src || d1.Lineage.Parent != 2 || d1.Namespace != src {
		t.Fatalf("fork version 1: root %s (src@2 %s), namespace %s, lineage %+v", d1.SHA256, s2.SHA256, d1.Namespace, d1.Lineage)
	}
	if mf := readManifest(t, s, d1.ManifestURI); mf.Model != dst || mf.Namespace != src || mf.Lineage == nil || mf.Lineage.ParentModel != src {
		t.Errorf("fork manifest %+v", mf)
	}
	pullAll(dst)
	if first[dst+"@1"] != first[src+"@2"] {
		t.Errorf("%s@1 pulls other bytes than %s@2", dst, src)
	}

	phase(dst, appendRow(dst, "d-1", 101), appendRow(dst, "d-2", 102))                       // dst 2, 3
	phase(src, appendRow(src, "s-2", 2), appendRow(src, "s-3", 3), appendRow(src, "s-4", 4)) // src 3-5
	phase(dst, appendRow(dst, "d-3", 103))                                                   // dst 4

	if _, err := s.Ctl.GetVersion(ctx, src, 2); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("src@2: %v, want expired by retention", err)
	}
	// GC of both once more, with no grace at all.
	for _, m := range []string{src, dst} {
		mdl, _ := s.Ctl.GetModel(ctx, m)
		if _, err := retention.Run(ctx, s.Ctl, s.Store, m, mdl.Retention, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	pullAll(src)
	pullAll(dst)
	if got := forkRows(t, s, src); !slices.Equal(got, []int64{1, 2, 3, 4}) {
		t.Errorf("src rows %v", got)
	}
	if got := forkRows(t, s, dst); !slices.Equal(got, []int64{1, 101, 102, 103}) {
		t.Errorf("fork rows %v", got)
	}
	// The fork's data files and blocks are in src's namespace, every one
	// a retained version of either lists is there, and nothing else is.
	srcRefs, dstRefs := refs(t, s, src), refs(t, s, dst)
	stored := storedBlocks(t, s, src)
	for d := range srcRefs {
		if !stored[d] {
			t.Errorf("block %s of a retained %s version was deleted", d, src)
		}
	}
	for d := range dstRefs {
		if !stored[d] {
			t.Errorf("block %s of a retained %s version was deleted", d, dst)
		}
	}
	for d := range stored {
		if _, ok := srcRefs[d]; !ok {
			if _, ok := dstRefs[d]; !ok {
				t.Errorf("block %s no retained version lists was not deleted", d)
			}
		}
	}
	if objs, _ := s.Store.List(ctx, "models/"+dst+"/blocks/"); len(objs) > 0 {
		t.Errorf("%d blocks under the fork's own prefix", len(objs))
	}
	if objs, _ := s.Store.List(ctx, "models/"+dst+"/tables/"); len(objs) > 0 {
		t.Errorf("%d data files under the fork's own prefix", len(objs))
	}
	// Blocks src@2 and the fork's first version list and no other
	// retained version does: kept only for the fork.
	d1Map := mapOf(t, s, d1)
	var forkOnly []blocks.Digest
	latestDst, _ := s.Ctl.ListVersions(ctx, dst, false)
	later := map[blocks.Digest]struct{}{}
	for _, v := range latestDst[1:] {
		for d := range mapOf(t, s, v).Digests() {
			later[d] = struct{}{}
		}
	}
	for d := range d1Map.Digests() {
		_, inSrc := srcRefs[d]
		_, inLater := later[d]
		if !inSrc && !inLater {
			forkOnly = append(forkOnly, d)
		}
	}
	if len(forkOnly) == 0 {
		t.Fatal("no block is kept only for the fork's first version: the test proves nothing")
	}
	// The fork's first version expires: those blocks go.
	if _, err := retention.Run(ctx, s.Ctl, s.Store, dst, 1, 0, 0); err != nil {
		t.Fatal(err)
	}
	stored = storedBlocks(t, s, src)
	for _, d := range forkOnly {
		if stored[d] {
			t.Errorf("block %s only the expired %s@1 listed was kept", d, dst)
		}
	}
	pullAll(src)
	pullAll(dst)
}

// pullVerified pulls v as teactl pull does, checks it against its
// content index and returns the file's sha256.
func pullVerified(t *testing.T, s *stacktest.Stack, v controldb.Version) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.duckdb")
	if err := versionFile(ctx, s, v, path); err != nil {
		t.Fatalf("pull %s@%d: %v", v.Model, v.Version, err)
	}
	if err := snapshot.Verify(ctx, path, v); err != nil {
		t.Fatalf("verify %s@%d: %v", v.Model, v.Version, err)
	}
	for _, tb := range v.Tables {
		for _, f := range tb.Files {
			if _, err := s.Store.Stat(ctx, f.Key); err != nil {
				t.Errorf("%s@%d: data file %s: %v", v.Model, v.Version, f.Key, err)
			}
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(data))
}

func readManifest(t *testing.T, s *stacktest.Stack, key string) snapshot.Manifest {
	t.Helper()
	rc, err := s.Store.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	var mf snapshot.Manifest
	if err := json.Unmarshal(data, &mf); err != nil {
		t.Fatal(err)
	}
	return mf
}

func mapOf(t *testing.T, s *stacktest.Stack, v controldb.Version) *blocks.Map {
	t.Helper()
	root, err := blocks.ParseDigest(v.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	bm, err := blocks.GetMap(context.Background(), s.Store, v.SnapshotURI, root)
	if err != nil {
		t.Fatalf("%s@%d: %v", v.Model, v.Version, err)
	}
	return bm
}

// refs are the blocks the retained versions of m list.
func refs(t *testing.T, s *stacktest.Stack, m string) map[blocks.Digest]struct{} {
	t.Helper()
	vs, err := s.Ctl.ListVersions(context.Background(), m, false)
	if err != nil {
		t.Fatal(err)
	}
	out := map[blocks.Digest]struct{}{}
	for _, v := range vs {
		for d := range mapOf(t, s, v).Digests() {
			out[d] = struct{}{}
		}
	}
	return out
}

func storedBlocks(t *testing.T, s *stacktest.Stack, ns string) map[blocks.Digest]bool {
	t.Helper()
	prefix := "models/" + ns + "/blocks/"
	objs, err := s.Store.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[blocks.Digest]bool{}
	for _, o := range objs {
		if d, ok := blocks.ParseObjectKey(o.Key[len(prefix):]); ok {
			out[d] = true
		}
	}
	return out
}

// forkRows returns column n of table t in m's latest version, sorted.
func forkRows(t *testing.T, s *stacktest.Stack, m string) []int64 {
	t.Helper()
	db, _ := latest(t, s, m)
	rows, err := db.Query("SELECT n FROM t ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}
