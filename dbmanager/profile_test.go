package dbmanager_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/profile"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

func fileSHAs(tb snapshot.Table) []string {
	var out []string
	for _, f := range tb.Files {
		out = append(out, f.SHA256)
	}
	return out
}

// TestProfileAfterAppend: every data file a version writes has a column
// profile; after an append the new version's table profile (the merge of
// its files' profiles) is the merge of the previous version's and the new
// file's, and equals, in estimate, a profile built from the whole table
// of the version's snapshot; so it does after an update (the rewritten
// file re-profiled) and a delete.
func TestProfileAfterAppend(t *testing.T) {
	defer dbmanager.SetArchiveLimits(1000, 1024, 8)()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "prof", AllowSQL: true}).ID
	run(t, s, m, nil)
	ctx := context.Background()
	v := submitVersion(t, s, stacktest.Request(m, "fill", "sql", map[string]any{"sql": "CREATE TABLE big AS SELECT range AS id, 'k' || (range % 13) AS k, CASE WHEN range % 10 = 0 THEN NULL ELSE range * 0.5 END AS x, DATE '2020-01-01' + range::INTEGER AS d FROM range(4500)"}))
	before := table(t, checkArchive(t, s, m, v), "big")
	old, err := profile.Load(ctx, s.Store, m, "big", fileSHAs(before))
	if err != nil {
		t.Fatal(err)
	}
	v = submitVersion(t, s, stacktest.Request(m, "app", "append", map[string]any{"table": "big", "rows": []map[string]any{
		{"id": 5000, "k": "zz", "x": nil, "d": "1999-12-31"}, {"id": 5001, "k": "k1", "x": 99999.5, "d": "2030-01-01"}}}))
	after := table(t, checkArchive(t, s, m, v), "big")
	if len(after.Files) != len(before.Files)+1 {
		t.Fatalf("the append wrote %d files, want one", len(after.Files)-len(before.Files))
	}
	added, err := profile.LoadFile(ctx, s.Store, m, "big", after.Files[len(after.Files)-1].SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if added.Rows != 2 {
		t.Fatalf("the appended file's profile has %d rows, want 2", added.Rows)
	}
	got, err := profile.Load(ctx, s.Store, m, "big", fileSHAs(after))
	if err != nil {
		t.Fatal(err)
	}
	want, err := profile.Merge(old, added)
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := want.MarshalBinary()
	gb, _ := got.MarshalBinary()
	if string(wb) != string(gb) {
		t.Errorf("the table's profile is not the merge of the previous version's and the appended file's")
	}

	if whole := wholeProfile(t, s, m, v, after); got.Rows != 4502 || !sameEstimates(t, got, whole) {
		t.Fatalf("after the append: merged %d rows, want 4502, and the estimates of the whole table", got.Rows)
	}
	if k := got.Columns[1]; k.Min.Text != "k0" || k.Max.Text != "zz" || k.Distinct() != 14 || k.Top[0].Text != "k1" || k.Top[0].Low != 348 || k.Top[0].High != 348 {
		t.Errorf("column k: min %s max %s distinct %d top %+v; want k0, zz, 14, k1 with exactly 348 rows", k.Min.Text, k.Max.Text, k.Distinct(), k.Top[0])
	}
	if d := got.Columns[3]; d.Min.Text != "1999-12-31" || d.Max.Text != "2032-04-26" {
		t.Errorf("column d: min %s max %s, want 1999-12-31 and 2032-04-26", d.Min.Text, d.Max.Text)
	}
	if x := got.Columns[2]; x.Nulls != 451 || x.Max.Text != "99999.5" {
		t.Errorf("column x: %d nulls, max %s; want 451 and 99999.5", x.Nulls, x.Max.Text)
	}

	// An update rewrites (and re-profiles) the file it changed; a delete
	// the files after it: the table's profile is still the whole table's.
	v = submitVersion(t, s, stacktest.Request(m, "upd", "update", map[string]any{"table": "big", "set": map[string]any{"k": "updated"},
		"where": []map[string]any{{"column": "id", "op": ">=", "value": 2100}, {"column": "id", "op": "<", "value": 2200}}}))
	upd := table(t, checkArchive(t, s, m, v), "big")
	got, err = profile.Load(ctx, s.Store, m, "big", fileSHAs(upd))
	if err != nil {
		t.Fatal(err)
	}
	sameEstimates(t, got, wholeProfile(t, s, m, v, upd))
	k := got.Columns[1]
	found := slices.ContainsFunc(k.Top, func(v profile.Value) bool { return v.Text == "updated" && v.Low == 100 && v.High == 100 })
	if k.Distinct() != 15 || !found || k.Top[0] != (profile.Value{Text: "k1", Hash: k.Top[0].Hash, Low: 340, High: 340}) {
		t.Errorf("after the update, column k: distinct %d, top %+v; want 15, k1 with 340 rows first and updated with 100", k.Distinct(), k.TopValues())
	}
	v = submitVersion(t, s, stacktest.Request(m, "del", "sql", map[string]any{"sql": "DELETE FROM big WHERE id < 1500"}))
	del := table(t, checkArchive(t, s, m, v), "big")
	if got, err = profile.Load(ctx, s.Store, m, "big", fileSHAs(del)); err != nil {
		t.Fatal(err)
	}
	if whole := wholeProfile(t, s, m, v, del); got.Rows != 3002 || !sameEstimates(t, got, whole) {
		t.Errorf("after the delete: %d rows, want 3002, and the estimates of the whole table", got.Rows)
	}
}

// wholeProfile builds the profile of table tb of version v from the
// version's snapshot in one go.
func wholeProfile(t *testing.T, s *stacktest.Stack, m string, v int64, tb snapshot.Table) *profile.Profile {
	t.Helper()
	ctx := context.Background()
	pv, err := s.Ctl.GetVersion(ctx, m, v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "v.duckdb")
	if err := versionFile(ctx, s, pv, path); err != nil {
		t.Fatal(err)
	}
	db, err := duck.Open(ctx, path, duck.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	whole, err := profile.Build(ctx, conn, tb.Name, tb.Columns, "")
	if err != nil {
		t.Fatal(err)
	}
	return whole
}

// sameEstimates reports whether got (merged) has whole's rows, nulls,
// distinct estimates, min and max, and the same exact top values.
func sameEstimates(t *testing.T, got, whole *profile.Profile) bool {
	t.Helper()
	ok := got.Rows == whole.Rows
	for i, c := range got.Columns {
		w := whole.Columns[i]
		if c.Nulls != w.Nulls || c.Distinct() != w.Distinct() || c.Min.Text != w.Min.Text || c.Max.Text != w.Max.Text {
			t.Errorf("%s: merged nulls %d distinct %d min %s max %s; whole table %d %d %s %s", c.Name, c.Nulls, c.Distinct(), c.Min.Text, c.Max.Text, w.Nulls, w.Distinct(), w.Min.Text, w.Max.Text)
			ok = false
		}
		for j, tv := range c.TopValues() {
			if tv.Low == tv.High && (j >= len(w.Top) || w.Top[j] != tv) {
				t.Errorf("%s: merged top %+v, whole table %+v", c.Name, c.TopValues(), w.TopValues())
				ok = false
				break
			}
		}
	}
	return ok
}

// TestProfilesOff: with Config.Profiles "off" the data files a version
// writes (whole, then appended) have no profiles, and their row counts,
// counted without the profile's query, still match the snapshot.
func TestProfilesOff(t *testing.T) {
	defer dbmanager.SetArchiveLimits(1000, 1024, 8)()
	s := stacktest.New(t, queue.Config{})
	m := s.CreateModel(t, controldb.Model{ID: "noprof", AllowSQL: true}).ID
	cfg := testConfig(s, m)
	cfg.Profiles = "off"
	runConfig(t, s, cfg, nil)
	ctx := context.Background()
	v := submitVersion(t, s, stacktest.Request(m, "fill", "sql", map[string]any{"sql": "CREATE TABLE big AS SELECT range AS id, 'k' || (range % 13) AS k FROM range(2500)"}))
	whole := table(t, checkArchive(t, s, m, v), "big")
	v = submitVersion(t, s, stacktest.Request(m, "app", "append", map[string]any{"table": "big", "rows": []map[string]any{{"id": 5000, "k": "zz"}}}))
	after := table(t, checkArchive(t, s, m, v), "big")
	if len(whole.Files) < 2 || len(after.Files) != len(whole.Files)+1 {
		t.Fatalf("%d files written whole, %d after the append; want at least 2 and one more", len(whole.Files), len(after.Files))
	}
	for _, f := range after.Files {
		if _, err := profile.LoadFile(ctx, s.Store, m, "big", f.SHA256); !errors.Is(err, profile.ErrNoProfile) {
			t.Errorf("file %s of %d rows: profile error %v, want ErrNoProfile", f.SHA256, f.Rows, err)
		}
	}
}
