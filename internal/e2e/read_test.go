package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/objstore"
)

// versionJSON is what `teactl versions --json` prints per version.
type versionJSON struct {
	Version      int64  `json:"version"`
	RequestCount int    `json:"request_count"`
	SHA256       string `json:"sha256"`
	SnapshotURI  string `json:"snapshot_uri"`
	Expired      *string
	Tables       []struct {
		Name  string `json:"name"`
		Rows  int64  `json:"rows"`
		Files []struct {
			Key string `json:"key"`
		} `json:"files"`
	} `json:"tables"`
}

// countRows opens a DuckDB file read-only in this process, as an analyst
// would, and counts the rows of table (an expression for FROM); with
// path "" it counts in an in-memory database.
func countRows(t *testing.T, path, table string) int64 {
	t.Helper()
	dsn := path
	if path != "" {
		dsn += "?access_mode=read_only"
	}
	db, err := sql.Open("duckdb", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// TestReadPathOnS3 is the tour of issue "versions readers can trust": the
// dev stack with MinIO as its object store, versions published with
// snapshots and a Parquet archive, retention, versions/pull/query/diff/gc,
// and bad input on the read path.
func TestReadPathOnS3(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	srv := miniotest.Shared(t)
	cfg := srv.Bucket(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	d := startDev(t, stackDir(t), "--dev-store-url", miniotest.URL(cfg))
	ctx := context.Background()
	store, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	d.must(t, "model", "create", "cafe", "--retention", "3")
	d.must(t, "submit", "cafe", "create_table", "--wait", "--args",
		`{"table":"menu","columns":[{"name":"id","type":"BIGINT"},{"name":"item","type":"VARCHAR"}],"primary_key":["id"]}`)
	d.must(t, "submit", "cafe", "create_table", "--wait", "--args", `{"table":"tills","columns":[{"name":"n","type":"INTEGER"}]}`)
	d.must(t, "submit", "cafe", "append", "--wait", "--args", `{"table":"menu","rows":[{"id":1,"item":"tea"},{"id":2,"item":"cake"},{"id":3,"item":"scone"}]}`)
	d.must(t, "submit", "cafe", "append", "--wait", "--args", `{"table":"menu","rows":[{"id":4,"item":"jam"},{"id":5,"item":"milk"}]}`)
	d.must(t, "submit", "cafe", "delete", "--wait", "--args", `{"table":"menu","where":[{"column":"id","op":"=","value":1}]}`)

	// Five versions, retention 3: versions 1 and 2 are expired and their
	// snapshots gone; the tills data file of version 2 is still
	// listed by the retained versions and kept.
	var vs []versionJSON
	if err := json.Unmarshal([]byte(d.must(t, "versions", "cafe", "--json")), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Version != 3 || vs[2].Version != 5 {
		t.Fatalf("retained versions: %+v", vs)
	}
	objs, err := store.List(ctx, "models/cafe/versions/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		// The block map of a version expired within the block grace (1 h)
		// stays with its blocks, for a reader in the middle of a pull.
		if (strings.HasPrefix(o.Key, "models/cafe/versions/1/") || strings.HasPrefix(o.Key, "models/cafe/versions/2/")) && !strings.HasSuffix(o.Key, "/blocks.json") {
			t.Errorf("snapshot object of an expired version left: %s", o.Key)
		}
	}
	rows := map[int64]map[string]int64{}
	for _, v := range vs {
		rows[v.Version] = map[string]int64{}
		for _, tb := range v.Tables {
			rows[v.Version][tb.Name] = tb.Rows
			if len(tb.Files) == 0 {
				t.Errorf("version %d table %s lists no data file", v.Version, tb.Name)
			}
			for _, f := range tb.Files {
				if _, err := store.Stat(ctx, f.Key); err != nil {
					t.Errorf("version %d table %s: %v", v.Version, tb.Name, err)
				}
			}
		}
	}
	if rows[3]["menu"] != 3 || rows[4]["menu"] != 5 || rows[5]["menu"] != 4 || rows[5]["tills"] != 0 {
		t.Fatalf("row counts: %v", rows)
	}

	// pull: the file opens with plain DuckDB read-only and holds the rows
	// of the manifest.
	work := t.TempDir()
	out := filepath.Join(work, "latest.duckdb")
	if got := strings.TrimSpace(d.must(t, "pull", "cafe", "-o", out)); got != out {
		t.Fatalf("pull printed %q, want %q", got, out)
	}
	if n := countRows(t, out, "menu"); n != 4 {
		t.Fatalf("pulled latest: %d rows", n)
	}
	old := filepath.Join(work, "v3.duckdb")
	d.must(t, "pull", "cafe", "--version", "3", "-o", old)
	if n := countRows(t, old, "menu"); n != 3 {
		t.Fatalf("pulled version 3: %d rows", n)
	}

	// query, from the snapshot and from the Parquet archive.
	for _, args := range [][]string{
		{"query", "cafe", "SELECT count(*) AS n, max(id) AS top FROM menu", "--format", "json"},
		{"query", "cafe", "SELECT count(*) AS n, max(id) AS top FROM menu", "--format", "json", "--source", "parquet"},
	} {
		var res []struct{ N, Top int64 }
		if err := json.Unmarshal([]byte(d.must(t, args...)), &res); err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].N != 4 || res[0].Top != 5 {
			t.Fatalf("%v: %+v", args, res)
		}
	}
	if csv := d.must(t, "query", "cafe", "SELECT item FROM menu ORDER BY id", "--version", "3", "--format", "csv"); csv != "item\ntea\ncake\nscone\n" {
		t.Fatalf("csv of version 3: %q", csv)
	}

	// diff: version 3 → 5 adds jam and milk and removes tea.
	var diffs []struct {
		Table       string `json:"table"`
		RowsAdded   int64  `json:"rows_added"`
		RowsRemoved int64  `json:"rows_removed"`
	}
	if err := json.Unmarshal([]byte(d.must(t, "diff", "cafe", "3", "5", "--json")), &diffs); err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int64{}
	for _, df := range diffs {
		got[df.Table] = [2]int64{df.RowsAdded, df.RowsRemoved}
	}
	if got["menu"] != [2]int64{2, 1} || got["tills"] != [2]int64{0, 0} {
		t.Fatalf("diff 3 5: %+v", diffs)
	}

	// gc on demand with the model's retention changes nothing more.
	d.must(t, "gc", "cafe")
	if err := json.Unmarshal([]byte(d.must(t, "versions", "cafe", "--json")), &vs); err != nil || len(vs) != 3 {
		t.Fatalf("after gc: %d versions, %v", len(vs), err)
	}

	// Bad input: one clear error, nothing at the output path.
	missing := filepath.Join(work, "never.duckdb")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"pull", "nosuch", "-o", missing}, 1, "does not exist"},
		{[]string{"pull", "cafe", "--version", "1", "-o", missing}, 1, "no version 1"},
		{[]string{"pull", "cafe", "--version", "99", "-o", missing}, 1, "no version 99"},
		{[]string{"query", "cafe", "DELETE FROM menu"}, 2, "one SELECT statement"},
		{[]string{"query", "cafe", "SELECT 1; DROP TABLE menu"}, 2, "statements"},
		{[]string{"query", "cafe", "SELECT * FROM read_csv('/etc/passwd')"}, 2, "disabled by configuration"},
		{[]string{"diff", "cafe", "3", "x"}, 2, "positive numbers"},
	} {
		_, errOut, code := d.teactl(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("teactl %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}
	// A corrupted snapshot in the object store is refused at pull.
	v4 := vs[1]
	if err := store.Put(ctx, v4.SnapshotURI, strings.NewReader("not a database"), 14); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := d.teactl(t, "pull", "cafe", "--version", "4", "-o", missing)
	if code == 0 || !strings.Contains(errOut, "corrupt") {
		t.Errorf("corrupted pull: exit %d, %q", code, errOut)
	}
	// An unreachable object store.
	bad := *d
	bad.env = append(append([]string{}, d.env...), "TEATREE_STORE_URL=s3://nobucket?endpoint=http://127.0.0.1:1&path_style=true")
	_, errOut, code = bad.teactl(t, "pull", "cafe", "-o", missing)
	if code != 6 || !strings.Contains(errOut, "not reachable") {
		t.Errorf("unreachable store: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("a failed pull left %s", missing)
	}
	if entries, _ := os.ReadDir(work); len(entries) != 2 {
		t.Fatalf("failed pulls left files: %v", entries)
	}
}
