package dbmanager_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// TestFailedUploadRecordsNoVersion: the blocks and the data files of a
// version are uploaded concurrently; while either kind cannot be put (a
// file where the store's directory for it should be), no version is
// recorded in Postgres and no manifest is written, even though the other
// kind went up; once the store is whole again the publication resumes and
// the version holds every row.
func TestFailedUploadRecordsNoVersion(t *testing.T) {
	for _, tc := range []struct{ name, dir, other string }{
		{"data files", "tables", "blocks"},
		{"blocks", "blocks", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := stacktest.New(t, queue.Config{})
			m := s.CreateModel(t, controldb.Model{ID: "upfail", AllowSQL: true}).ID
			blocker := filepath.Join(s.StoreDir, "models", m, tc.dir)
			if err := os.MkdirAll(filepath.Dir(blocker), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
			s.Submit(t, createTable(m, "create"), fill(m, "fill", 200000))
			run(t, s, m, nil)
			// The other kind goes up (data files: the blocks); then the
			// publication is retried, and never recorded.
			deadline := time.Now().Add(wait)
			for tc.other != "" {
				if objs, err := s.Store.List(ctx, "models/"+m+"/"+tc.other+"/"); err == nil && len(objs) > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no object under %s/ while %s/ cannot be written", tc.other, tc.dir)
				}
				time.Sleep(50 * time.Millisecond)
			}
			for range 20 {
				time.Sleep(100 * time.Millisecond)
				if v, err := s.Ctl.GetVersion(ctx, m, 0); !errors.Is(err, model.ErrNotFound) {
					t.Fatalf("with %s/ unwritable: version %d recorded (%v)", tc.dir, v.Version, err)
				}
				if _, err := s.Store.Stat(ctx, snapshot.ManifestKey(m, 1)); !errors.Is(err, model.ErrNotFound) {
					t.Fatalf("with %s/ unwritable: manifest of version 1: %v", tc.dir, err)
				}
			}
			if err := os.Remove(blocker); err != nil {
				t.Fatal(err)
			}
			for id, n := range s.Outcomes(t, m, wait, "create", "fill") {
				if n.Status != model.StatusApplied || n.Version == 0 {
					t.Fatalf("%s: %s version %d %q", id, n.Status, n.Version, n.Error)
				}
			}
			db, v := latest(t, s, m)
			var rows int
			if err := db.QueryRow("SELECT count(*) FROM wide").Scan(&rows); err != nil || rows != 200000 {
				t.Fatalf("version %d: wide has %d rows (%v), want 200000", v.Version, rows, err)
			}
			var files int
			for _, tb := range v.Tables {
				files += len(tb.Files)
			}
			if files == 0 {
				t.Fatalf("version %d lists no data files", v.Version)
			}
			for _, tb := range v.Tables {
				for _, f := range tb.Files {
					if _, err := s.Store.Stat(ctx, f.Key); err != nil {
						t.Errorf("data file %s of version %d: %v", f.Key, v.Version, err)
					}
				}
			}
		})
	}
}
