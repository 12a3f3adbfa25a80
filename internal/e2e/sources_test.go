package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/internal/pgtest"
)

// TestAppendCompressedFilesAndPostgres: teactl append stages gzip and
// zstd CSV and JSON files, NDJSON and a file without an extension (found
// by its content) and the db-manager reads each; a file that is none of
// the formats is refused before anything is staged, with one line; and
// --from-postgres streams a query's rows from a source configured in the
// db-manager's environment (TEATREE_SOURCE_CRM), while an unknown source
// fails the request; upsert reads the same source through teactl submit,
// and a key the source gives twice fails the request.
func TestAppendCompressedFilesAndPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack")
	}
	src := pgtest.NewDatabase(t)
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec(ctx, `CREATE TABLE customers (id bigint, name text, since date, balance numeric(10,2));
		INSERT INTO customers SELECT g, 'c' || g, DATE '2026-01-01' + g, g * 1.25 FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	pg.Close(ctx)

	d := startDevEnv(t, stackDir(t), []string{"TEATREE_SOURCE_CRM=" + src})
	d.must(t, "model", "create", "shop")

	csv := []byte("id,item\n1,tea\n2,cup\n3,pot\n")
	nd := []byte("{\"id\":1,\"item\":\"tea\"}\n{\"id\":2,\"item\":\"cup\"}\n{\"id\":3,\"item\":\"pot\"}\n")
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(csv)
	w.Close()
	var gzArr bytes.Buffer
	w = gzip.NewWriter(&gzArr)
	w.Write([]byte(`[{"id":1,"item":"tea"},{"id":2,"item":"cup"},{"id":3,"item":"pot"}]`))
	w.Close()
	zw, _ := zstd.NewWriter(nil)
	dir := t.TempDir()
	files := map[string][]byte{
		"orders.csv.gz":      gz.Bytes(),
		"orders.csv.zst":     zw.EncodeAll(csv, nil),
		"orders.json.gz":     gzArr.Bytes(),
		"orders.ndjson":      nd,
		"orders.jsonl":       nd,
		"orders.ndjson.zst":  zw.EncodeAll(nd, nil),
		"export":             gz.Bytes(), // no extension: gzip CSV by content
		"export-events.data": nd,         // unknown extension: NDJSON by content
	}
	i := 0
	for name, data := range files {
		i++
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		table := "t" + strings.NewReplacer(".", "_", "-", "_").Replace(name)
		d.must(t, "append", "shop", table, p, "--wait")
		if out := d.must(t, "query", "shop", "SELECT count(*) AS n, sum(id) AS s, string_agg(item, ',' ORDER BY id) AS items FROM "+table, "--format", "csv"); out != "n,s,items\n3,6,\"tea,cup,pot\"\n" {
			t.Errorf("%s: %q", name, out)
		}
	}
	blob := filepath.Join(dir, "blob")
	os.WriteFile(blob, []byte{0, 1, 2, 3, 0xfe, 0xff, 0}, 0o644)
	if _, errOut, code := d.teactl(t, "append", "shop", "b", blob); code != 2 || !strings.Contains(errOut, "is not a Parquet, Arrow IPC, CSV, JSON or NDJSON file") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("garbage file: exit %d, %q", code, errOut)
	}

	d.must(t, "append", "shop", "customers", "--from-postgres", "crm", "--query", "SELECT * FROM customers WHERE id <= 600", "--wait")
	d.must(t, "append", "shop", "customers", "--from-postgres", "crm", "--table", "customers", "--wait")
	if out := d.must(t, "query", "shop", "SELECT count(*) AS n, sum(balance) AS b, max(since) AS s FROM customers", "--format", "csv"); out != "n,b,s\n1600,851000.00,2028-09-27\n" {
		t.Errorf("customers: %q", out)
	}
	if _, errOut, code := d.teactl(t, "append", "shop", "customers", "--from-postgres", "erp", "--table", "customers", "--wait"); code != 3 || !strings.Contains(errOut, `unknown source "erp": this db-manager knows crm`) {
		t.Errorf("unknown source: exit %d, %q", code, errOut)
	}

	// upsert from the source: new keys inserted, the others updated.
	d.must(t, "submit", "shop", "create_table", "--args", `{"table":"accounts","columns":[{"name":"id","type":"BIGINT"},{"name":"balance","type":"DECIMAL(10,2)"}],"primary_key":["id"]}`, "--wait")
	d.must(t, "submit", "shop", "upsert", "--args", `{"table":"accounts","source":{"name":"crm","query":"SELECT id, balance FROM customers WHERE id <= 10"}}`, "--wait")
	d.must(t, "submit", "shop", "upsert", "--args", `{"table":"accounts","source":{"name":"crm","query":"SELECT id, balance * 2 AS balance FROM customers WHERE id BETWEEN 6 AND 15"}}`, "--wait")
	if out := d.must(t, "query", "shop", "SELECT count(*) AS n, sum(balance) AS b FROM accounts", "--format", "csv"); out != "n,b\n15,281.25\n" {
		t.Errorf("accounts after two upserts: %q", out)
	}
	if _, errOut, code := d.teactl(t, "submit", "shop", "upsert", "--args", `{"table":"accounts","source":{"name":"crm","query":"SELECT 1 AS id, 0 AS balance UNION ALL SELECT 1, 2"}}`, "--wait"); code != 3 || !strings.Contains(errOut, "gives this key of table accounts more than once") {
		t.Errorf("a key given twice: exit %d, %q", code, errOut)
	}
}
