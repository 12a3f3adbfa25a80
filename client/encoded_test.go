package client_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/snapshot"
)

// TestArchiveViewsRestoreEncodedColumns: the views of Open(FromParquet) (teactl query
// --source parquet) give back the types and values of columns the archive
// holds encoded (manifest schema's encoding), not the encoded text.
func TestArchiveViewsRestoreEncodedColumns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := duck.Open(ctx, "", duck.Options{AllowedDirs: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER, h HUGEINT, v INTERVAL, a UHUGEINT[2]);
		INSERT INTO t VALUES (1, 2 * 9223372036854775807::HUGEINT + 3, -INTERVAL 1 MICROSECOND, [340282366920938463463374607431768211455, NULL]), (2, NULL, NULL, NULL)`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tables, err := snapshot.DescribeCurrent(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "t.parquet")
	f, err := snapshot.ExportParquet(ctx, conn, "t", tables[0].Columns, "", local)
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.NewDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	key := snapshot.ParquetKey("m", "t", f.SHA256)
	if err := objstore.PutFile(ctx, store, key, local); err != nil {
		t.Fatal(err)
	}
	schema, _ := json.Marshal(tables[0].Columns)
	v := controldb.Version{Model: "m", Version: 1, Tables: []controldb.Table{{Name: "t", SHA256: f.SHA256, Rows: 2, Bytes: f.Bytes, Schema: schema, Files: []controldb.DataFile{{Key: key, SHA256: f.SHA256, Rows: 2, Bytes: f.Bytes}}}}}
	cache := filepath.Join(dir, "cache")
	c, err := client.New(client.Options{Store: store, CacheDir: cache, CacheBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	arch, err := c.Open(ctx, v, client.FromParquet)
	if err != nil {
		t.Fatal(err)
	}
	defer arch.Close()
	q := "SELECT typeof(h), typeof(v), typeof(a), CAST(h AS VARCHAR), CAST(v AS VARCHAR), CAST(a AS VARCHAR) FROM t WHERE id = 1"
	var got, want [6]string
	if err := arch.QueryRow(q).Scan(&got[0], &got[1], &got[2], &got[3], &got[4], &got[5]); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(q).Scan(&want[0], &want[1], &want[2], &want[3], &want[4], &want[5]); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("archive view gives %q, the table %q", got, want)
	}
}
