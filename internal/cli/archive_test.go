package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// runManager runs a real db-manager for model m on s until the test ends.
func runManager(t *testing.T, s *stacktest.Stack, m string) {
	t.Helper()
	cfg := dbmanager.Config{Model: m, DataDir: s.DataDir, Threads: 1, MemoryLimit: "256MB", LeasePoll: 50 * time.Millisecond}
	mgr, err := dbmanager.New(cfg, stacktest.Logger(t), s.JS, s.Ctl, s.Store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("db-manager did not stop")
		}
	})
}

// freshDuckDB is an in-memory DuckDB as an analyst opens it: no teatree
// settings, external access on.
func freshDuckDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// csvOf runs q on db and returns its result as teactl query --format csv
// prints it.
func csvOf(t *testing.T, db *sql.DB, q string) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeQuery(context.Background(), &b, db, q, "csv"); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return b.String()
}

// statements returns the lines of a teactl archive script that are not
// comments.
func statements(script string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(script), "\n") {
		if !strings.HasPrefix(l, "--") {
			out = append(out, l)
		}
	}
	return out
}

// TestArchiveReadsVersionWithoutTeatree: the Parquet files a db-manager
// published, as teactl archive lists them, exist, and its read_parquet
// statements and CREATE VIEW script, run in a fresh DuckDB, return the
// rows and types of the snapshot's tables; a missing version or table is
// one line and exit 1.
func TestArchiveReadsVersionWithoutTeatree(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	runManager(t, s, "shop")
	reqs := []any{
		"create_table", map[string]any{"table": "orders", "columns": []map[string]string{{"name": "id", "type": "BIGINT"}, {"name": "item", "type": "VARCHAR"}, {"name": "price", "type": "DECIMAL(9,2)"}, {"name": "day", "type": "DATE"}}, "primary_key": []string{"id"}},
		"create_table", map[string]any{"table": "empty", "columns": []map[string]string{{"name": "n", "type": "INTEGER"}}},
		"append", map[string]any{"table": "orders", "rows": []map[string]any{{"id": 1, "item": "tea", "price": "2.50", "day": "2026-01-02"}, {"id": 2, "item": "it's \"cake\"", "price": "4.00", "day": nil}}},
		"append", map[string]any{"table": "orders", "rows": []map[string]any{{"id": 3, "item": "scone", "price": "3.10", "day": "2026-01-03"}}},
	}
	var ids []string
	for i := 0; i < len(reqs); i += 2 {
		id := fmt.Sprintf("r%d", i/2)
		ids = append(ids, id)
		s.Submit(t, stacktest.Request("shop", id, reqs[i].(string), reqs[i+1]))
	}
	for id, n := range s.Outcomes(t, "shop", time.Minute, ids...) {
		if n.Status != model.StatusApplied {
			t.Fatalf("%s: %s %s", id, n.Status, n.Error)
		}
	}
	// A request is notified after its version is recorded.
	v, err := s.Ctl.GetVersion(ctx, "shop", 0)
	if err != nil {
		t.Fatal(err)
	}
	env := stackEnv(t, s)

	out, errOut, code := teactl(t, ctx, env, "archive", "shop", "--json")
	if code != 0 {
		t.Fatalf("archive --json: exit %d, %s", code, errOut)
	}
	// The shape: the keys a reader uses.
	var shape struct {
		Model   *string `json:"model"`
		Version *int64  `json:"version"`
		Views   *string `json:"views"`
		Tables  []map[string]json.RawMessage
		S3      json.RawMessage `json:"s3"`
	}
	if err := json.Unmarshal([]byte(out), &shape); err != nil || shape.Model == nil || *shape.Model != "shop" || shape.Version == nil || *shape.Version != v.Version || shape.Views == nil || len(shape.Tables) != 2 || shape.S3 != nil {
		t.Fatalf("archive --json: %v\n%s", err, out)
	}
	for _, tb := range shape.Tables {
		for _, k := range []string{"name", "rows", "bytes", "columns", "files", "sql"} {
			if tb[k] == nil {
				t.Errorf("table %s has no %q: %s", tb["name"], k, out)
			}
		}
		var files []map[string]json.RawMessage
		json.Unmarshal(tb["files"], &files)
		for _, f := range files {
			for _, k := range []string{"uri", "key", "rows", "bytes", "sha256"} {
				if f[k] == nil {
					t.Errorf("a file of table %s has no %q: %s", tb["name"], k, out)
				}
			}
		}
	}
	var a archive
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatal(err)
	}
	if got := []string{a.Tables[0].Name, a.Tables[1].Name}; !slices.Equal(got, []string{"empty", "orders"}) {
		t.Fatalf("tables %v", got)
	}
	db := freshDuckDB(t)
	for _, tb := range a.Tables {
		var rows int64
		for _, f := range tb.Files {
			st, err := os.Stat(f.URI)
			if err != nil || !filepath.IsAbs(f.URI) || st.Size() != f.Bytes || f.URI != filepath.Join(s.StoreDir, filepath.FromSlash(f.Key)) {
				t.Errorf("table %s file %+v: %v", tb.Name, f, err)
			}
			if sum, _, _ := snapshot.FileSHA256(f.URI); sum != f.SHA256 {
				t.Errorf("table %s file %s: sha256 %s, archive says %s", tb.Name, f.URI, sum, f.SHA256)
			}
			rows += f.Rows
		}
		if len(tb.Files) == 0 || rows != tb.Rows {
			t.Errorf("table %s: %d files of %d rows, table has %d", tb.Name, len(tb.Files), rows, tb.Rows)
		}
		// The same rows as the snapshot, in a DuckDB that knows nothing of teatree.
		q := "SELECT * FROM " + duck.Ident(tb.Name) + " ORDER BY ALL"
		snap, errOut, code := teactl(t, ctx, env, "query", "shop", q, "--format", "csv")
		if code != 0 {
			t.Fatalf("query %s: %s", tb.Name, errOut)
		}
		if got := csvOf(t, db, "SELECT * FROM ("+tb.SQL+") ORDER BY ALL"); got != snap {
			t.Errorf("table %s: read_parquet gives\n%s\nthe snapshot\n%s", tb.Name, got, snap)
		}
		// And the same types as the content index records.
		var cols []snapshot.Column
		if err := json.Unmarshal(tb.Columns, &cols); err != nil {
			t.Fatal(err)
		}
		var want, got []string
		for _, c := range cols {
			want = append(want, c.Name+" "+c.Type)
		}
		rs, err := db.Query("SELECT column_name || ' ' || column_type FROM (DESCRIBE " + tb.SQL + ")")
		if err != nil {
			t.Fatal(err)
		}
		for rs.Next() {
			var c string
			rs.Scan(&c)
			got = append(got, c)
		}
		rs.Close()
		if !slices.Equal(got, want) {
			t.Errorf("table %s: read_parquet has columns %v, the content index %v", tb.Name, got, want)
		}
	}
	if pq, _, _ := teactl(t, ctx, env, "query", "shop", "SELECT * FROM orders ORDER BY ALL", "--format", "csv", "--source", "parquet"); pq != csvOf(t, db, "SELECT * FROM ("+a.Tables[1].SQL+") ORDER BY ALL") {
		t.Errorf("query --source parquet: %q", pq)
	}

	// The script: only the CREATE VIEW statements are not comments, and
	// run as it is it maps every table to its files.
	out, errOut, code = teactl(t, ctx, env, "archive", "shop")
	if code != 0 {
		t.Fatalf("archive: exit %d, %s", code, errOut)
	}
	if st := statements(out); len(st) != 2 || !strings.HasPrefix(st[0], `CREATE OR REPLACE VIEW "empty" AS SELECT * FROM read_parquet([`) || strings.Contains(out, "SECRET") {
		t.Errorf("archive script:\n%s", out)
	}
	for _, tb := range a.Tables {
		if !strings.Contains(out, "-- "+tb.SQL+";\n") || !strings.Contains(out, tb.Files[0].URI) {
			t.Errorf("archive script lacks table %s's SELECT or files:\n%s", tb.Name, out)
		}
	}
	views := freshDuckDB(t)
	if _, err := views.Exec(out); err != nil {
		t.Fatalf("the archive script does not run: %v\n%s", err, out)
	}
	if got := csvOf(t, views, "SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM empty) AS empty"); got != "orders,empty\n3,0\n" {
		t.Errorf("views of the script: %q", got)
	}
	// One table: its SELECT is the statement.
	out, _, code = teactl(t, ctx, env, "archive", "shop", "orders", "--version", fmt.Sprint(v.Version))
	if st := statements(out); code != 0 || len(st) != 1 || st[0] != a.Tables[1].SQL+";" || strings.Contains(out, `"empty"`) {
		t.Errorf("archive shop orders: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"archive", "shop", "--version", "99"}, "has no version 99"},
		{[]string{"archive", "shop", "nosuch"}, `has no table "nosuch" (its tables: empty, orders)`},
		{[]string{"archive", "nosuch"}, "does not exist"},
	} {
		out, errOut, code := teactl(t, ctx, env, tc.args...)
		line := strings.TrimSpace(errOut)
		if code != ExitError || out != "" || !strings.Contains(line, tc.msg) || strings.Contains(line, "\n") {
			t.Errorf("teactl %s: exit %d, %q; want exit 1 and one line with %q", strings.Join(tc.args, " "), code, errOut, tc.msg)
		}
	}
}

// multiFile publishes version n of model m in s with table t as the given
// row ranges, one Parquet data file each (content-addressed in the store),
// and table u as one file, as a db-manager writing data files would. The
// snapshot is not written: only the archive is read.
func multiFile(t *testing.T, s *stacktest.Stack, m string, n int64, ranges ...[2]int) controldb.Version {
	t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, "", duck.Options{ExternalAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	file := func(table, q string) controldb.DataFile {
		p := filepath.Join(t.TempDir(), "f.parquet")
		if _, err := db.ExecContext(ctx, "COPY ("+q+") TO "+duck.Literal(p)+" (FORMAT parquet)"); err != nil {
			t.Fatal(err)
		}
		var rows int64
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM read_parquet("+duck.Literal(p)+")").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		sum, size, err := snapshot.FileSHA256(p)
		if err != nil {
			t.Fatal(err)
		}
		f := controldb.DataFile{Key: snapshot.ParquetKey(m, table, sum), SHA256: sum, Rows: rows, Bytes: size}
		if err := objstore.PutFile(ctx, s.Store, f.Key, p); err != nil {
			t.Fatal(err)
		}
		return f
	}
	table := func(name string, files ...controldb.DataFile) controldb.Table {
		tb := controldb.Table{Name: name, SHA256: snapshot.FilesDigest(toSnapshot(files)), Files: files,
			Schema: json.RawMessage(`[{"name":"id","type":"BIGINT"},{"name":"v","type":"VARCHAR"}]`)}
		for _, f := range files {
			tb.Rows += f.Rows
			tb.Bytes += f.Bytes
		}
		return tb
	}
	var files []controldb.DataFile
	for _, r := range ranges {
		files = append(files, file("t", fmt.Sprintf("SELECT range AS id, 'v' || range AS v FROM range(%d, %d)", r[0], r[1])))
	}
	u := table("u", file("u", "SELECT 7::BIGINT AS id, 'seven' AS v"))
	tb := table("t", files...)
	if err := s.Ctl.ClaimEpoch(ctx, m, 1); err != nil {
		t.Fatal(err)
	}
	v := controldb.Version{Model: m, Version: n, SnapshotURI: fmt.Sprintf("models/%s/versions/%d/snapshot.duckdb", m, n), SHA256: tb.SHA256,
		Epoch: 1, Created: time.Now(), Tables: []controldb.Table{tb, u}}
	if err := s.Ctl.PublishVersion(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	return v
}

func toSnapshot(fs []controldb.DataFile) []snapshot.DataFile {
	out := make([]snapshot.DataFile, len(fs))
	for i, f := range fs {
		out[i] = snapshot.DataFile{Key: f.Key, Rows: f.Rows, Bytes: f.Bytes, SHA256: f.SHA256}
	}
	return out
}

// TestQueryParquetReadsEveryDataFile: a table of three data files reads as
// their union, through query --source parquet (each file cached once,
// verified) and through the statement teactl archive prints; a data file
// missing or corrupt in the store is one clear line.
func TestQueryParquetReadsEveryDataFile(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	v := multiFile(t, s, "shop", 1, [2]int{0, 3}, [2]int{3, 5}, [2]int{5, 6})
	files := v.Tables[0].Files
	env := stackEnv(t, s)
	const q = "SELECT count(*) AS n, sum(id) AS s, string_agg(v, '|' ORDER BY id) AS vs, (SELECT v FROM u) AS u FROM t"
	const want = "n,s,vs,u\n6,15,v0|v1|v2|v3|v4|v5,seven\n"
	query := func() (string, string, int) {
		return teactl(t, ctx, env, "query", "shop", q, "--source", "parquet", "--format", "csv")
	}
	if out, errOut, code := query(); code != 0 || out != want {
		t.Fatalf("query --source parquet over 3 files: exit %d, %q, %s; want %q", code, out, errOut, want)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(env["TEATREE_CACHE"], "parquet", f.SHA256+".parquet")); err != nil {
			t.Errorf("data file %s is not cached: %v", f.Key, err)
		}
	}

	out, errOut, code := teactl(t, ctx, env, "archive", "shop", "t", "--json")
	var a archive
	if err := json.Unmarshal([]byte(out), &a); code != 0 || err != nil || len(a.Tables) != 1 || len(a.Tables[0].Files) != 3 {
		t.Fatalf("archive shop t --json: exit %d, %v, %s%s", code, err, out, errOut)
	}
	for i, f := range a.Tables[0].Files {
		if f.Key != files[i].Key || f.URI != filepath.Join(s.StoreDir, filepath.FromSlash(f.Key)) || f.Rows != files[i].Rows {
			t.Errorf("file %d: %+v, want key %s", i, f, files[i].Key)
		}
	}
	if got := csvOf(t, freshDuckDB(t), "SELECT count(*) AS n, sum(id) AS s FROM ("+a.Tables[0].SQL+")"); got != "n,s\n6,15\n" {
		t.Errorf("archive's read_parquet: %q", got)
	}

	// The cache serves the files, verified: gone from the store, they
	// still read.
	for _, f := range files {
		if err := s.Store.Delete(ctx, f.Key); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := query(); code != 0 || out != want {
		t.Fatalf("query from the cache: exit %d, %q, %s", code, out, errOut)
	}
	// Missing from the cache and the store: one line naming the file.
	mid := filepath.Join(env["TEATREE_CACHE"], "parquet", files[1].SHA256+".parquet")
	os.Remove(mid)
	if _, errOut, code := query(); code != ExitError || !strings.Contains(errOut, files[1].Key+" is missing from the object store") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("missing data file: exit %d, %q", code, errOut)
	}
	// Another content at its key: corrupt, and not left in the cache.
	if err := s.Store.Put(ctx, files[1].Key, strings.NewReader("not parquet"), 11); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := query(); code != ExitError || !strings.Contains(errOut, files[1].Key+" is corrupt") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("corrupt data file: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(mid); err == nil {
		t.Errorf("the corrupt download stayed in the cache")
	}
}

// TestArchiveOnS3: on an S3 store the files are s3://bucket/prefix/key
// URIs, and the script tells DuckDB's CREATE SECRET for the endpoint,
// without secret values.
func TestArchiveOnS3(t *testing.T) {
	if bin, _ := miniotest.Binary(); bin == "" {
		t.Skip("no MinIO binary (scripts/minio.sh)")
	}
	srv := miniotest.Shared(t)
	cfg := srv.Bucket(t)
	cfg.Prefix = "pre/fix"
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	var err error
	if s.Store, err = objstore.NewS3(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	v := multiFile(t, s, "shop", 1, [2]int{0, 2}, [2]int{2, 4})
	env := stackEnv(t, s)
	env["TEATREE_STORE_URL"] = miniotest.URL(cfg)

	out, errOut, code := teactl(t, ctx, env, "archive", "shop", "--json")
	var a archive
	if err := json.Unmarshal([]byte(out), &a); code != 0 || err != nil || len(a.Tables) != 2 {
		t.Fatalf("archive --json: exit %d, %v, %s%s", code, err, out, errOut)
	}
	if a.S3 == nil || *a.S3 != (archiveS3{Bucket: cfg.Bucket, Endpoint: cfg.Endpoint, Region: "us-east-1", PathStyle: true}) {
		t.Errorf("s3: %+v", a.S3)
	}
	for i, f := range a.Tables[0].Files {
		if want := "s3://" + cfg.Bucket + "/pre/fix/" + v.Tables[0].Files[i].Key; f.URI != want {
			t.Errorf("file %d: %s, want %s", i, f.URI, want)
		}
	}
	out, _, _ = teactl(t, ctx, env, "archive", "shop")
	host := strings.TrimPrefix(cfg.Endpoint, "http://")
	secret := "-- CREATE SECRET teatree (TYPE s3, KEY_ID '<access key id>', SECRET '<secret access key>', REGION 'us-east-1', ENDPOINT '" + host + "', USE_SSL false, URL_STYLE 'path');\n"
	if !strings.Contains(out, secret) || strings.Contains(out, miniotest.SecretKey) || !strings.Contains(out, "read_parquet(['s3://"+cfg.Bucket+"/pre/fix/models/shop/tables/t/") {
		t.Errorf("archive on S3:\n%s\nwant the line\n%s", out, secret)
	}
	// The files are where the URIs say: a client of the bucket without
	// the prefix finds them.
	cfg.Prefix = ""
	root, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range a.Tables[0].Files {
		if _, err := root.Stat(ctx, strings.TrimPrefix(f.URI, "s3://"+cfg.Bucket+"/")); err != nil {
			t.Errorf("%s: %v", f.URI, err)
		}
	}
}
