package controldb_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/pgtest"
	"github.com/teatree/teatree/model"
)

func open(t testing.TB) *controldb.DB {
	t.Helper()
	ctx := context.Background()
	db, err := controldb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func version(m string, n, epoch int64, tables ...controldb.Table) controldb.Version {
	return controldb.Version{Model: m, Version: n, SnapshotURI: "s", SHA256: sha('a' + byte(n%6)), ManifestURI: "m", Bytes: 10,
		FirstSeq: uint64(n), LastSeq: uint64(n), RequestCount: 1, Epoch: epoch, Created: time.Now(), Tables: tables}
}

func TestMigrateConcurrentlyAndTwice(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			db, err := controldb.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			errs[i] = db.Migrate(ctx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestModels(t *testing.T) {
	db, ctx := open(t), context.Background()
	m, err := db.CreateModel(ctx, controldb.Model{ID: "shop", StartSeq: 7})
	if err != nil {
		t.Fatal(err)
	}
	if m.SizeClass != "small" || m.Retention != controldb.DefaultRetention || m.StartSeq != 7 {
		t.Fatalf("defaults: %+v", m)
	}
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "shop"}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []controldb.Model{{ID: "Bad_Id"}, {ID: "x", SizeClass: "huge"}, {ID: "y", Retention: -1}} {
		if _, err := db.CreateModel(ctx, bad); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := db.GetModel(ctx, "nope"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	m.SizeClass, m.Retention = "large", 3
	if m, err = db.UpdateModel(ctx, m); err != nil || m.SizeClass != "large" || m.Retention != 3 {
		t.Fatalf("update: %+v %v", m, err)
	}
	ms, err := db.ListModels(ctx)
	if err != nil || len(ms) != 1 || ms[0].ID != "shop" {
		t.Fatalf("list: %+v %v", ms, err)
	}
}

func TestEpochFencesPublish(t *testing.T) {
	db, ctx := open(t), context.Background()
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimEpoch(ctx, "m", 5); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimEpoch(ctx, "m", 4); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("older epoch claimed: %v", err)
	}
	if err := db.PublishVersion(ctx, version("m", 1, 4), nil); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("stale publish: %v", err)
	}
	if err := db.PublishVersion(ctx, version("m", 2, 5), nil); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("gap: %v", err)
	}
	if _, err := db.GetVersion(ctx, "m", 0); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("nothing published: %v", err)
	}
	if _, err := db.LatestVersion(ctx, "m"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("latest, nothing published: %v", err)
	}
}

func TestPublishIsIdempotentAndKeepsFinalStatus(t *testing.T) {
	db, ctx := open(t), context.Background()
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimEpoch(ctx, "m", 1); err != nil {
		t.Fatal(err)
	}
	queued := controldb.RequestRecord{RequestID: "r1", Model: "m", Function: "append", Status: model.StatusQueued, StreamSeq: 3, Submitted: time.Now()}
	if err := db.RecordRequests(ctx, []controldb.RequestRecord{queued}); err != nil {
		t.Fatal(err)
	}
	applied := queued
	applied.Status, applied.Version, applied.Finished = model.StatusApplied, 1, time.Now()
	tbl := controldb.Table{Name: "t", ParquetURI: "p1", SHA256: sha('f'), Rows: 3, Bytes: 100, Schema: []byte(`[{"name":"a","type":"BIGINT"}]`)}
	v := version("m", 1, 1, tbl)
	for range 2 {
		if err := db.PublishVersion(ctx, v, []controldb.RequestRecord{applied}); err != nil {
			t.Fatal(err)
		}
	}
	other := v
	other.SHA256 = sha('0')
	if err := db.PublishVersion(ctx, other, nil); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("same number, other content: %v", err)
	}
	// The dispatcher recording the request late does not undo its outcome.
	if err := db.RecordRequests(ctx, []controldb.RequestRecord{queued}); err != nil {
		t.Fatal(err)
	}
	r, err := db.GetRequest(ctx, "r1")
	if err != nil || r.Status != model.StatusApplied || r.Version != 1 || r.StreamSeq != 3 {
		t.Fatalf("request: %+v %v", r, err)
	}
	got, err := db.GetVersion(ctx, "m", 0)
	if err != nil || got.Version != 1 || len(got.Tables) != 1 || got.Tables[0].Rows != 3 || got.Tables[0].ParquetURI != "p1" {
		t.Fatalf("version: %+v %v", got, err)
	}
	if m, _ := db.GetModel(ctx, "m"); m.CurrentVersion != 1 {
		t.Fatalf("current version %d", m.CurrentVersion)
	}
}

func TestExpireVersions(t *testing.T) {
	db, ctx := open(t), context.Background()
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimEpoch(ctx, "m", 2); err != nil {
		t.Fatal(err)
	}
	file := func(key string) []controldb.DataFile {
		return []controldb.DataFile{{Key: key, SHA256: sha('f'), Rows: 1, Bytes: 1}}
	}
	shared := controldb.Table{Name: "dim", SHA256: sha('d'), Schema: []byte(`[]`), Files: file("dim-1")}
	for n := int64(1); n <= 5; n++ {
		key := "fact-" + string(rune('0'+n))
		fact := controldb.Table{Name: "fact", SHA256: sha('e'), Schema: []byte(`[]`), Files: append(file(key), file(key+"b")...)}
		if err := db.PublishVersion(ctx, version("m", n, 2, shared, fact), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExpireVersions(ctx, "m", 2, 1); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("stale expire: %v", err)
	}
	expired, err := db.ExpireVersions(ctx, "m", 2, 2)
	if err != nil || expired != 3 {
		t.Fatalf("expired %d: %v", expired, err)
	}
	if v, ok, err := db.OldestRetained(ctx, "m"); err != nil || !ok || v != 4 {
		t.Fatalf("oldest retained %d %v: %v, want 4", v, ok, err)
	}
	if _, ok, err := db.OldestRetained(ctx, "none"); err != nil || ok {
		t.Fatalf("oldest retained of a model without versions: %v %v", ok, err)
	}
	vs, err := db.ListVersions(ctx, "m", false)
	if err != nil || len(vs) != 2 || vs[0].Version != 4 || vs[1].Version != 5 {
		t.Fatalf("retained: %+v %v", vs, err)
	}
	all, _ := db.ListVersions(ctx, "m", true)
	if len(all) != 5 || all[0].Expired == nil {
		t.Fatalf("all: %d", len(all))
	}
	if _, err := db.GetVersion(ctx, "m", 1); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("expired version found: %v", err)
	}
	if n, err := db.LatestVersion(ctx, "m"); err != nil || n != 5 {
		t.Fatalf("latest version %d: %v, want 5", n, err)
	}
	v5, err := db.GetVersion(ctx, "m", 5)
	if err != nil || len(v5.Tables) != 2 || len(v5.Tables[1].Files) != 2 || v5.Tables[1].Files[1].Key != "fact-5b" {
		t.Fatalf("version 5: %+v %v", v5.Tables, err)
	}
	live, err := db.LiveDataFiles(ctx, "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"dim-1": true, "fact-4": true, "fact-4b": true, "fact-5": true, "fact-5b": true}
	if !maps.Equal(live, want) {
		t.Fatalf("live: %v, want %v", live, want)
	}
	// Within the grace, the files of just expired versions stay.
	if live, err = db.LiveDataFiles(ctx, "m", time.Hour); err != nil || !live["fact-1"] || !live["fact-3b"] {
		t.Fatalf("live within the grace: %v %v", live, err)
	}
	// gc from outside a writer (epoch 0) is not fenced.
	if _, err := db.ExpireVersions(ctx, "m", 1, 0); err != nil {
		t.Fatal(err)
	}
}

// TestPublishRequestsWithoutVersion: failed and rejected requests change
// nothing, so they are published to the request log without a version;
// the model's settled sequence tells the dispatcher they are done. The
// write is fenced like a version's.
func TestPublishRequestsWithoutVersion(t *testing.T) {
	db, ctx := open(t), context.Background()
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := db.ClaimEpoch(ctx, "m", 2); err != nil {
		t.Fatal(err)
	}
	failed := controldb.RequestRecord{RequestID: "f1", Model: "m", Function: "append", Status: model.StatusFailed, Error: "boom", StreamSeq: 4, Submitted: time.Now(), Finished: time.Now()}
	if err := db.PublishRequests(ctx, "m", 1, 4, []controldb.RequestRecord{failed}); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("stale epoch: %v, want model.ErrStaleEpoch", err)
	}
	for range 2 {
		if err := db.PublishRequests(ctx, "m", 2, 4, []controldb.RequestRecord{failed}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := db.GetRequest(ctx, "f1")
	if err != nil || r.Status != model.StatusFailed || r.Version != 0 || r.Error != "boom" {
		t.Fatalf("request: %+v %v; want failed without a version", r, err)
	}
	m, err := db.GetModel(ctx, "m")
	if err != nil || m.SettledSeq != 4 || m.CurrentVersion != 0 {
		t.Fatalf("model: settled %d, current version %d, %v; want 4 and no version", m.SettledSeq, m.CurrentVersion, err)
	}
	if _, err := db.GetVersion(ctx, "m", 0); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("a version was recorded: %v", err)
	}
	// A version raises the settled sequence too, never lowers it.
	v := version("m", 1, 2)
	v.FirstSeq, v.LastSeq = 3, 3
	if err := db.PublishVersion(ctx, v, nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := db.GetModel(ctx, "m"); m.SettledSeq != 4 {
		t.Errorf("settled %d after an older version, want 4", m.SettledSeq)
	}
}

// TestRequestLogRowBelongsToTheFirstRequest: a later request that reuses
// an id (another model, or the same model at another stream sequence)
// never overwrites the first request's record.
func TestRequestLogRowBelongsToTheFirstRequest(t *testing.T) {
	db, ctx := open(t), context.Background()
	first := controldb.RequestRecord{RequestID: "r", Model: "a", Function: "append", Status: model.StatusApplied, Version: 1, StreamSeq: 3, Submitted: time.Now(), Finished: time.Now()}
	if err := db.RecordRequests(ctx, []controldb.RequestRecord{first}); err != nil {
		t.Fatal(err)
	}
	other := controldb.RequestRecord{RequestID: "r", Model: "b", Function: "delete", Status: model.StatusFailed, Error: "x", StreamSeq: 9, Submitted: time.Now(), Finished: time.Now()}
	later := first
	later.StreamSeq, later.Status, later.Version = 12, model.StatusRejected, 0
	if err := db.RecordRequests(ctx, []controldb.RequestRecord{other, later}); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetRequests(ctx, []string{"r", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if r := got["r"]; len(got) != 1 || r.Model != "a" || r.Function != "append" || r.Status != model.StatusApplied || r.StreamSeq != 3 {
		t.Errorf("records %+v; want only r of model a, applied at 3", got)
	}
	for m, want := range map[string]int{"a": 1, "b": 0} {
		if recs, err := db.ListRequests(ctx, m); err != nil || len(recs) != want {
			t.Errorf("requests of %s: %+v, %v; want %d", m, recs, err, want)
		}
	}
}

// TestRecordRequestsRepeatedIDs: one call may carry several records of
// one id (the dispatcher's queued and the applier's outcome, or a reuse of
// the id); they apply in order, as separate calls would: the first
// (model, stream sequence) owns the row, a final status stands.
func TestRecordRequestsRepeatedIDs(t *testing.T) {
	db, ctx := open(t), context.Background()
	now := time.Now()
	queued := controldb.RequestRecord{RequestID: "r", Model: "a", Function: "append", Status: model.StatusQueued, StreamSeq: 3, Submitted: now}
	applied := queued
	applied.Status, applied.Version, applied.Finished = model.StatusApplied, 2, now
	reuse := controldb.RequestRecord{RequestID: "r", Model: "a", Function: "delete", Status: model.StatusRejected, Error: "duplicate", StreamSeq: 7, Submitted: now, Finished: now}
	other := controldb.RequestRecord{RequestID: "s", Model: "a", Function: "append", Status: model.StatusApplied, Version: 2, StreamSeq: 4, Submitted: now, Finished: now}
	if err := db.RecordRequests(ctx, []controldb.RequestRecord{queued, other, applied, reuse, queued}); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetRequests(ctx, []string{"r", "s"})
	if err != nil {
		t.Fatal(err)
	}
	if r := got["r"]; r.Status != model.StatusApplied || r.StreamSeq != 3 || r.Function != "append" {
		t.Errorf("r: %+v; want applied at 3 (the later queued and the reuse change nothing)", r)
	}
	if s := got["s"]; s.Status != model.StatusApplied || s.StreamSeq != 4 {
		t.Errorf("s: %+v; want applied at 4", s)
	}
	if r, err := db.GetRequest(ctx, "r"); err != nil || r.Version != 2 {
		t.Errorf("r: version %d, %v; want 2", r.Version, err)
	}
}

// BenchmarkRecordRequests is the request-log write of a version of 300
// one-row appends (what the db-manager's publication and the
// dispatcher's batches do), new ids each time.
//
//	go test -run '^$' -bench BenchmarkRecordRequests ./controldb
func BenchmarkRecordRequests(b *testing.B) {
	db, ctx := open(b), context.Background()
	reqs := make([]controldb.RequestRecord, 300)
	seq := 0
	for b.Loop() {
		now := time.Now()
		for i := range reqs {
			seq++
			reqs[i] = controldb.RequestRecord{RequestID: "r" + strconv.Itoa(seq), Model: "a", Function: "append", Status: model.StatusApplied, Version: 2, StreamSeq: uint64(seq), Submitted: now, Finished: now}
		}
		if err := db.RecordRequests(ctx, reqs); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGroups: a model's group is set at creation, changed and cleared by
// UpdateModel, validated like a model id, and GroupMembers lists the
// members by id; a group without members is model.ErrNotFound.
func TestGroups(t *testing.T) {
	db := open(t)
	ctx := context.Background()
	for _, m := range []controldb.Model{{ID: "b-2", Group: "g"}, {ID: "a-1", Group: "g"}, {ID: "c-3"}} {
		if _, err := db.CreateModel(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.CreateModel(ctx, controldb.Model{ID: "d", Group: "Bad.Group"}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("bad group: %v, want ErrInvalid", err)
	}
	got, err := db.GroupMembers(ctx, "g")
	if err != nil || !slices.Equal(got, []string{"a-1", "b-2"}) {
		t.Errorf("members %v, %v: want [a-1 b-2]", got, err)
	}
	c, err := db.GetModel(ctx, "c-3")
	if err != nil || c.Group != "" {
		t.Fatalf("c-3: %+v, %v", c, err)
	}
	c.Group = "g"
	if c, err = db.UpdateModel(ctx, c); err != nil || c.Group != "g" {
		t.Fatalf("update: %+v, %v", c, err)
	}
	a, _ := db.GetModel(ctx, "a-1")
	a.Group = ""
	if _, err := db.UpdateModel(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, err = db.GroupMembers(ctx, "g"); err != nil || !slices.Equal(got, []string{"b-2", "c-3"}) {
		t.Errorf("members after the updates %v, %v: want [b-2 c-3]", got, err)
	}
	if _, err := db.GroupMembers(ctx, "none"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("empty group: %v, want ErrNotFound", err)
	}
	ms, err := db.ListModels(ctx)
	if err != nil || len(ms) != 3 || ms[1].Group != "g" {
		t.Errorf("list %+v, %v: want b-2 in group g", ms, err)
	}
}
