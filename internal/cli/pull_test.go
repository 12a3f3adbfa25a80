package cli

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// blockModel publishes block versions of a model from one DuckDB file, as
// a db-manager does: each version is a change and a CHECKPOINT, its map
// (blocks.MapFile), the blocks the previous version lacks uploaded, the
// map at snapshot.BlockMapKey and the version in Postgres.
type blockModel struct {
	t     *testing.T
	s     *stacktest.Stack
	model string
	path  string
	n     int64
	maps  map[int64]*blocks.Map
	files map[int64]string // a copy of each version's file
}

// newBlockModel makes the file: table t of rows rows (id, a name, a random
// double), not published yet.
func newBlockModel(t *testing.T, s *stacktest.Stack, m string, rows int) *blockModel {
	t.Helper()
	b := &blockModel{t: t, s: s, model: m, path: filepath.Join(t.TempDir(), m+".duckdb"), maps: map[int64]*blocks.Map{}, files: map[int64]string{}}
	b.exec(fmt.Sprintf(`CREATE TABLE t AS SELECT range AS id, 'name-' || (range %% 1000) AS v, random() AS x FROM range(%d)`, rows))
	if err := s.Ctl.ClaimEpoch(context.Background(), m, 1); err != nil {
		t.Fatal(err)
	}
	return b
}

// exec runs q on the file, checkpoints and closes it, and returns the row
// count of t.
func (b *blockModel) exec(q string) int64 {
	b.t.Helper()
	ctx := context.Background()
	db, err := duck.Open(ctx, b.path, duck.Options{Threads: 1})
	if err != nil {
		b.t.Fatal(err)
	}
	defer db.Close()
	var rows int64
	for _, s := range []string{q, "CHECKPOINT"} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			b.t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&rows); err != nil {
		b.t.Fatal(err)
	}
	return rows
}

// publish runs q (a change; "" for none) and publishes the next version.
func (b *blockModel) publish(q string) controldb.Version {
	b.t.Helper()
	ctx := context.Background()
	rows := b.exec(cmp.Or(q, "SELECT 1"))
	b.n++
	m, _, err := blocks.MapFile(ctx, b.path)
	if err != nil {
		b.t.Fatal(err)
	}
	store, err := blocks.NewStore(b.s.Store, b.model)
	if err != nil {
		b.t.Fatal(err)
	}
	src, err := blocks.OpenFile(ctx, b.path, m)
	if err != nil {
		b.t.Fatal(err)
	}
	defer src.Close()
	if _, err := store.Upload(ctx, m, src, b.maps[b.n-1]); err != nil {
		b.t.Fatal(err)
	}
	key := snapshot.BlockMapKey(b.model, b.n)
	if err := blocks.PutMap(ctx, b.s.Store, key, m); err != nil {
		b.t.Fatal(err)
	}
	data, err := os.ReadFile(b.path)
	if err != nil {
		b.t.Fatal(err)
	}
	b.files[b.n] = filepath.Join(b.t.TempDir(), fmt.Sprintf("v%d.duckdb", b.n))
	if err := os.WriteFile(b.files[b.n], data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.maps[b.n] = m
	v := controldb.Version{Model: b.model, Version: b.n, SnapshotFormat: controldb.FormatBlocks, SnapshotURI: key, SHA256: m.Root().String(), Bytes: m.Size(), Epoch: 1, Created: time.Now(),
		Tables: []controldb.Table{{Name: "t", ParquetURI: fmt.Sprintf("models/%s/tables/t/%d.parquet", b.model, b.n), SHA256: m.Root().String(), Rows: rows, Schema: json.RawMessage(`{}`)}}}
	if err := b.s.Ctl.PublishVersion(ctx, v, nil); err != nil {
		b.t.Fatal(err)
	}
	return v
}

// missing is the number of bytes of version n's file in blocks that
// version have lacks, all-zero blocks (holes) excepted: what a pull of n
// over have fetches.
func (b *blockModel) missing(n, have int64) int64 {
	m := b.maps[n]
	var had map[blocks.Digest]struct{}
	if have > 0 {
		had = b.maps[have].Digests()
	}
	zero := blocks.Digest(sha256.Sum256(make([]byte, m.BlockSize)))
	var sum int64
	if _, ok := had[m.Header]; !ok {
		sum += blocks.HeaderSize
	}
	for _, d := range m.Blocks {
		if _, ok := had[d]; !ok && d != zero {
			sum += m.BlockSize
		}
	}
	return sum
}

// pullJSON runs teactl pull args --json and decodes its one line.
func pullJSON(t *testing.T, env map[string]string, args ...string) client.Pulled {
	t.Helper()
	out, errOut, code := teactl(t, context.Background(), env, append([]string{"pull", "--json"}, args...)...)
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("pull %v: exit %d, %q, %q", args, code, out, errOut)
	}
	var p client.Pulled
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("pull %v printed %q: %v", args, out, err)
	}
	return p
}

func sameBytes(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("%s (%d bytes) differs from %s (%d bytes)", got, len(b), want, len(a))
	}
}

// valueOf reads row id of the file at path, opened read-only in DuckDB.
func valueOf(t *testing.T, path string, id int) string {
	t.Helper()
	db, err := duck.Open(context.Background(), path, duck.Options{ReadOnly: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SELECT v FROM t WHERE id = ?", id).Scan(&v); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return v
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestPullReusesPreviousVersion: pulling version 2 over version 1 at the
// output path fetches only the blocks version 1 lacks and writes a file
// byte-identical to the published one, which DuckDB opens read-only; so
// does a pull that reuses the query cache's version 1, with or without
// the recorded block maps. A whole-file version is fetched whole.
func TestPullReusesPreviousVersion(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "shop", 200_000)
	v1 := b.publish("")
	v2 := b.publish("UPDATE t SET v = 'changed' WHERE id = 1000")
	env := stackEnv(t, s)
	dir := t.TempDir()
	out := filepath.Join(dir, "shop.duckdb")

	p := pullJSON(t, env, "shop", "--version", "1", "-o", out)
	if want := (client.Pulled{Model: "shop", Version: 1, Path: out, Digest: v1.SHA256, Bytes: v1.Bytes, Fetched: b.missing(1, 0), Downloaded: p.Downloaded}); p != want || p.Downloaded <= 0 || p.Downloaded >= p.Fetched {
		t.Errorf("first pull: %+v, want %+v and fewer bytes downloaded (compressed blocks) than fetched", p, want)
	}
	sameBytes(t, b.files[1], out)

	p = pullJSON(t, env, "shop", "-o", out)
	want := client.Pulled{Model: "shop", Version: 2, Path: out, Digest: v2.SHA256, Bytes: v2.Bytes, Fetched: b.missing(2, 1), Reused: p.Reused, Downloaded: p.Downloaded}
	if p != want || p.Reused < p.Bytes/2 || p.Fetched >= p.Bytes/4 || p.Downloaded <= 0 || p.Downloaded >= p.Fetched {
		t.Errorf("pull of version 2 over version 1: %+v, want %+v, most of it reused", p, want)
	}
	t.Logf("version 2 (%d bytes): fetched %d, reused %d", p.Bytes, p.Fetched, p.Reused)
	sameBytes(t, b.files[2], out)
	if got := valueOf(t, out, 1000); got != "changed" {
		t.Errorf("pulled version 2 has %q at id 1000", got)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("output directory holds %v, want only the pulled file", names)
	}

	// The query cache's version 1 is reused by a pull to a new path, with
	// the map recorded when it was written, and again without any.
	if out, errOut, code := teactl(t, context.Background(), env, "query", "shop", "SELECT v FROM t WHERE id = 1000", "--version", "1", "--format", "csv"); code != 0 || out != "v\nname-0\n" {
		t.Fatalf("query version 1: exit %d, %q, %q", code, out, errOut)
	}
	for _, forget := range []bool{false, true} {
		if forget {
			os.RemoveAll(filepath.Join(env["TEATREE_CACHE"], "pull"))
		}
		other := filepath.Join(t.TempDir(), "x.duckdb")
		if p := pullJSON(t, env, "shop", "-o", other); p.Fetched != b.missing(2, 1) {
			t.Errorf("pull of version 2 with version 1 cached (maps forgotten: %v): fetched %d bytes, want %d", forget, p.Fetched, b.missing(2, 1))
		}
		sameBytes(t, b.files[2], other)
	}

	// A whole-file version.
	s.CreateModel(t, controldb.Model{ID: "legacy", SizeClass: "small", Retention: 10})
	lv := publish(t, s, "legacy", 1, 5)
	lout := filepath.Join(dir, "legacy.duckdb")
	if p, want := pullJSON(t, env, "legacy", "-o", lout), (client.Pulled{Model: "legacy", Version: 1, Path: lout, Digest: lv.SHA256, Bytes: lv.Bytes, Fetched: lv.Bytes, Downloaded: lv.Bytes}); p != want {
		t.Errorf("pull of a whole-file version: %+v, want %+v", p, want)
	}
}

// TestPullRefusesCorruptBlock: a block object whose content does not match
// its digest fails the pull with one line, and the output path keeps what
// it had (the earlier version, or nothing); the query cache keeps nothing.
func TestPullRefusesCorruptBlock(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "shop", 100_000)
	b.publish("")
	b.publish("UPDATE t SET v = 'changed' WHERE id = 10")
	env := stackEnv(t, s)
	dir := t.TempDir()
	out := filepath.Join(dir, "shop.duckdb")
	pullJSON(t, env, "shop", "--version", "1", "-o", out)

	// Flip a byte of a block version 2 has and version 1 lacks.
	had := b.maps[1].Digests()
	var victim blocks.Digest
	for _, d := range b.maps[2].Blocks {
		if _, ok := had[d]; !ok {
			victim = d
			break
		}
	}
	obj := filepath.Join(s.StoreDir, filepath.FromSlash(blocks.ObjectKey("shop", victim, b.maps[2].Encoding)))
	data, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(obj, data, 0o644); err != nil {
		t.Fatal(err)
	}

	fresh := filepath.Join(dir, "fresh.duckdb")
	for _, target := range []string{out, fresh} {
		_, errOut, code := teactl(t, context.Background(), env, "pull", "shop", "-o", target)
		line := strings.TrimSpace(errOut)
		t.Logf("pull to %s: %s", filepath.Base(target), line)
		if code != ExitError || strings.Contains(line, "\n") || !strings.Contains(line, "snapshot of shop version 2 is corrupt") || !strings.Contains(line, victim.String()) {
			t.Errorf("pull to %s with a corrupt block: exit %d, %q; want exit 1 and one line naming the version and the block", target, code, errOut)
		}
	}
	sameBytes(t, b.files[1], out)
	if names := dirNames(t, dir); len(names) != 1 || names[0] != "shop.duckdb" {
		t.Errorf("after the refused pulls the directory holds %v, want only version 1's shop.duckdb", names)
	}
	if _, errOut, code := teactl(t, context.Background(), env, "query", "shop", "SELECT 1"); code != ExitError || !strings.Contains(errOut, "corrupt") {
		t.Errorf("query of the corrupt version: exit %d, %q", code, errOut)
	}
	if files := cacheFiles(t, env); len(files) != 0 {
		t.Errorf("the cache kept %v", files)
	}

	// Version 1's block map replaced: by version 2's (another root), then
	// by something that is not a block map.
	map2, err := os.ReadFile(filepath.Join(s.StoreDir, filepath.FromSlash(snapshot.BlockMapKey("shop", 2))))
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{map2, []byte("not a block map")} {
		if err := os.WriteFile(filepath.Join(s.StoreDir, filepath.FromSlash(snapshot.BlockMapKey("shop", 1))), data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := teactl(t, context.Background(), env, "pull", "shop", "--version", "1", "-o", fresh)
		t.Logf("pull with a bad block map: %s", strings.TrimSpace(errOut))
		if code != ExitError || strings.Count(strings.TrimSpace(errOut), "\n") > 0 || !strings.Contains(errOut, "snapshot of shop version 1 is corrupt") {
			t.Errorf("pull with a bad block map: exit %d, %q", code, errOut)
		}
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("after the refused pulls the directory holds %v", names)
	}
}

// TestPullFollow: pull --follow moves the file forward to each version
// announced, reusing it (a reader of the old file keeps reading it), goes
// to the latest when several are published at once, and stops cleanly on
// cancel, leaving only the file.
func TestPullFollow(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	b := newBlockModel(t, s, "shop", 100_000)
	b.publish("")
	env := stackEnv(t, s)
	dir := t.TempDir()
	out := filepath.Join(dir, "shop.duckdb")
	pub := notify.NewPublisher(s.JS)
	announce := func(v controldb.Version) {
		t.Helper()
		n := model.Notification{RequestID: fmt.Sprintf("r%d", v.Version), Model: "shop", Function: "append", Status: model.StatusApplied, Version: v.Version, Published: time.Now()}
		if err := pub.Publish(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr stacktest.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"pull", "shop", "-o", out, "--follow", "--json"}, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	}()
	// lines waits for the follower to have printed a version >= n.
	lines := func(n int64) []client.Pulled {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; {
			var ps []client.Pulled
			for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				var p client.Pulled
				if l != "" && json.Unmarshal([]byte(l), &p) == nil {
					ps = append(ps, p)
				}
			}
			if len(ps) > 0 && ps[len(ps)-1].Version >= n {
				return ps
			}
			if time.Now().After(deadline) {
				t.Fatalf("follow printed %q, %q; want version %d", stdout.String(), stderr.String(), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	lines(1)
	sameBytes(t, b.files[1], out)

	// A reader has version 1 open while version 2 replaces it.
	reader, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	announce(b.publish("UPDATE t SET v = 'changed' WHERE id = 10"))
	ps := lines(2)
	if p := ps[len(ps)-1]; p.Fetched != b.missing(2, 1) || p.Path != out {
		t.Errorf("follow to version 2: %+v, want %d bytes fetched", p, b.missing(2, 1))
	}
	sameBytes(t, b.files[2], out)
	if got := valueOf(t, out, 10); got != "changed" {
		t.Errorf("followed file has %q at id 10", got)
	}
	old, err := os.ReadFile(b.files[1])
	if err != nil {
		t.Fatal(err)
	}
	held := make([]byte, len(old)+1)
	if n, _ := reader.ReadAt(held, 0); n != len(old) || !bytes.Equal(held[:n], old) {
		t.Errorf("the reader of version 1 sees %d bytes that are not version 1", n)
	}

	// Two versions at once: it ends at the latest.
	v3 := b.publish("UPDATE t SET v = 'three' WHERE id = 20")
	v4 := b.publish("UPDATE t SET v = 'four' WHERE id = 30")
	announce(v3)
	announce(v4)
	ps = lines(4)
	for i := 1; i < len(ps); i++ {
		if ps[i].Version <= ps[i-1].Version {
			t.Errorf("follow printed versions out of order: %+v", ps)
		}
	}
	sameBytes(t, b.files[4], out)
	if got := valueOf(t, out, 30); got != "four" {
		t.Errorf("followed file has %q at id 30", got)
	}

	// Cancelled (SIGINT) while a version may be being built: it exits 0
	// and leaves one whole file, version 4 or 5.
	announce(b.publish("UPDATE t SET v = 'five' WHERE id % 7 = 0"))
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("follow exited %d after cancel: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not stop on cancel")
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("after follow the directory holds %v, want only the file", names)
	}
	if got := valueOf(t, out, 30); got != "four" {
		sameBytes(t, b.files[5], out)
	}
	if _, errOut, code := teactl(t, context.Background(), env, "pull", "shop", "--follow"); code != ExitUsage || !strings.Contains(errOut, "-o FILE") {
		t.Errorf("--follow without -o: exit %d, %q", code, errOut)
	}
}
