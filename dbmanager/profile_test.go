package dbmanager_test

import (
	"context"
	"path/filepath"
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
// of the version's snapshot.
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

	// The same, built from the version's snapshot in one go.
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
	whole, err := profile.Build(ctx, conn, "big", after.Columns, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Rows != 4502 || whole.Rows != got.Rows {
		t.Fatalf("rows: merged %d, whole %d, want 4502", got.Rows, whole.Rows)
	}
	for i, c := range got.Columns {
		w := whole.Columns[i]
		if c.Nulls != w.Nulls || c.Distinct() != w.Distinct() || c.Min.Text != w.Min.Text || c.Max.Text != w.Max.Text {
			t.Errorf("%s: merged nulls %d distinct %d min %s max %s; whole table %d %d %s %s", c.Name, c.Nulls, c.Distinct(), c.Min.Text, c.Max.Text, w.Nulls, w.Distinct(), w.Min.Text, w.Max.Text)
		}
	}
	k := got.Columns[1]
	if k.Min.Text != "k0" || k.Max.Text != "zz" || k.Distinct() != 14 || k.Top[0].Text != "k1" || k.Top[0].Low != 348 || k.Top[0].High != 348 {
		t.Errorf("column k: min %s max %s distinct %d top %+v; want k0, zz, 14, k1 with exactly 348 rows", k.Min.Text, k.Max.Text, k.Distinct(), k.Top[0])
	}
	if d := got.Columns[3]; d.Min.Text != "1999-12-31" || d.Max.Text != "2032-04-26" {
		t.Errorf("column d: min %s max %s, want 1999-12-31 and 2032-04-26", d.Min.Text, d.Max.Text)
	}
	if x := got.Columns[2]; x.Nulls != 451 || x.Max.Text != "99999.5" {
		t.Errorf("column x: %d nulls, max %s; want 451 and 99999.5", x.Nulls, x.Max.Text)
	}
}
