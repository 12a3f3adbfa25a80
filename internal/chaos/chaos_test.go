package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/blocks"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/snapshot"
)

// params size a run.
type params struct {
	seed     uint64
	models   int
	requests int
	clients  int
	faults   int
	interval time.Duration // mean time between faults
	leaseTTL time.Duration
}

// TestChaosShort is the run of make test: a few hundred requests and a
// dozen faults.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection on the whole stack")
	}
	run(t, params{seed: seedFromEnv(), models: 4, requests: 300, clients: 4, faults: 12, interval: 1500 * time.Millisecond, leaseTTL: 3 * time.Second})
}

// seedFromEnv returns $TEATREE_CHAOS_SEED, or a fresh seed.
func seedFromEnv() uint64 {
	if s := os.Getenv("TEATREE_CHAOS_SEED"); s != "" {
		var n uint64
		fmt.Sscan(s, &n)
		return n
	}
	return uint64(time.Now().UnixNano())
}

// result is what the checker counts.
type result struct {
	requests, acked, retries                int64
	lost, duplicated, outOfOrder, failed    int
	unnotified, divergedModels, badVersions int
	versions                                int
	faults                                  map[string]int
	dispatcherExits                         int
}

func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lost=%d duplicated=%d out_of_order=%d failed=%d unnotified=%d diverged_models=%d bad_versions=%d requests=%d acked=%d client_retries=%d versions=%d dispatcher_exits=%d",
		r.lost, r.duplicated, r.outOfOrder, r.failed, r.unnotified, r.divergedModels, r.badVersions, r.requests, r.acked, r.retries, r.versions, r.dispatcherExits)
	kinds := make([]string, 0, len(r.faults))
	total := 0
	for k, n := range r.faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		total += n
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, " faults=%d %s", total, strings.Join(kinds, " "))
	return b.String()
}

func (r result) violations() bool {
	return r.lost+r.duplicated+r.outOfOrder+r.failed+r.unnotified+r.divergedModels+r.badVersions > 0
}

func run(t *testing.T, p params) {
	t.Logf("chaos: seed %d (replay with TEATREE_CHAOS_SEED=%d)", p.seed, p.seed)
	rng := rand.New(rand.NewPCG(p.seed, p.seed^0x7ea7))
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Minute)
	defer cancel()
	c := newCluster(t, p.leaseTTL)

	dctx, stopDispatcher := context.WithCancel(ctx)
	dispatcherExits := c.superviseDispatcher(dctx)
	defer stopDispatcher()

	ctl := openControl(t, ctx, c)
	w := &workload{rng: rand.New(rand.NewPCG(p.seed, 1)), keys: map[string][]int64{}}
	var retries atomic.Int64
	var acks []ack
	for i := range p.models {
		m := fmt.Sprintf("chaos-%02d", i)
		w.models = append(w.models, m)
		createModel(t, ctx, c, ctl, m)
		a, err := submit(ctx, c.natsURL(), op{id: m + "-create", model: m, kind: "create"}, &retries)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}

	// The workload and the faults run side by side.
	// The workload is paced to last as long as the faults (a fault takes
	// two seconds besides the interval, measured); faults stop with the workload,
	// so every counted fault hit a system under load.
	rate := float64(p.requests) / (float64(p.faults) * (p.interval.Seconds() + 2))
	fctx, stopFaults := context.WithCancel(ctx)
	faults := make(chan map[string]int, 1)
	go func() { faults <- c.inject(fctx, rng, p.faults, p.interval) }()
	got, err := w.run(ctx, c.natsURL(), p.clients, p.requests, rate, &retries)
	stopFaults()
	acks = append(acks, got...)
	if err != nil {
		t.Fatal(err)
	}
	res := result{requests: int64(p.requests + p.models), acked: int64(len(acks)), faults: <-faults}

	// Heal, then wait until every acknowledged request is in a version.
	waitPublished(t, ctx, ctl, acks)
	stopDispatcher()
	res.retries = retries.Load()
	res.dispatcherExits = dispatcherExits()

	check(t, ctx, c, ctl, acks, &res)
	summary := "chaos: " + res.String() + fmt.Sprintf(" seed=%d", p.seed)
	fmt.Println(summary)
	t.Log(summary)
	if res.violations() {
		t.Fatalf("violations: %s", summary)
	}
}

func openControl(t *testing.T, ctx context.Context, c *cluster) *controldb.DB {
	deadline := time.Now().Add(time.Minute)
	for {
		ctl, err := controldb.Open(ctx, c.pgURL)
		if err == nil {
			// The dispatcher migrates at start.
			if _, err = ctl.ListModels(ctx); err == nil {
				t.Cleanup(ctl.Close)
				return ctl
			}
			ctl.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("control tables not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func createModel(t *testing.T, ctx context.Context, c *cluster, ctl *controldb.DB, m string) {
	cl, err := clientFor(c.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	last, err := queue.StreamLastSeq(ctx, cl.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateModel(ctx, controldb.Model{ID: m, StartSeq: last + 1}); err != nil {
		t.Fatal(err)
	}
}

// waitPublished waits until every model's requests are published up to
// its last acknowledged one (in a version, or in the request log for
// requests that changed nothing). Postgres may be restarting: errors are
// retried.
func waitPublished(t *testing.T, ctx context.Context, ctl *controldb.DB, acks []ack) {
	want := map[string]uint64{}
	for _, a := range acks {
		want[a.model] = max(want[a.model], a.seq)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for len(want) > 0 {
		for m, seq := range want {
			if mdl, err := ctl.GetModel(ctx, m); err == nil && mdl.SettledSeq >= seq {
				delete(want, m)
			}
		}
		if time.Now().After(deadline) {
			t.Logf("chaos: models not caught up after 5 minutes: %v", want)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// check compares the final state with the acknowledged requests.
func check(t *testing.T, ctx context.Context, c *cluster, ctl *controldb.DB, acks []ack, res *result) {
	store, err := objstore.NewS3(ctx, c.s3)
	if err != nil {
		t.Fatal(err)
	}
	byModel := map[string][]ack{}
	for _, a := range acks {
		byModel[a.model] = append(byModel[a.model], a)
	}
	notified := notifications(t, ctx, c)
	work := t.TempDir()
	for m, macks := range byModel {
		for _, a := range macks {
			if notified[a.id] != model.StatusApplied {
				res.unnotified++
			}
		}
		v, err := ctl.GetVersion(ctx, m, 0)
		if err != nil {
			t.Errorf("%s: %v", m, err)
			res.lost += len(macks)
			continue
		}
		path := filepath.Join(work, m+".duckdb")
		if _, _, err := snapshot.Fetch(ctx, store, v, path, blocks.FetchOptions{}); err != nil {
			t.Errorf("%s version %d: snapshot (%s %s): %v", m, v.Version, v.SnapshotFormat, v.SHA256, err)
			res.badVersions++
			continue
		}
		checkModel(t, ctx, ctl, m, path, macks, res)
		checkVersions(t, ctx, ctl, store, work, m, res)
	}
}

// checkModel reads the final snapshot of one model with a separate
// read-only DuckDB, and its request log from Postgres (a published
// snapshot carries no request log).
func checkModel(t *testing.T, ctx context.Context, ctl *controldb.DB, m, path string, acks []ack, res *result) {
	db, err := sql.Open("duckdb", path+"?access_mode=read_only")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type applied struct {
		seq    uint64
		status string
		at     time.Time
	}
	recs, err := ctl.ListRequests(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	log := map[string]applied{}
	var last time.Time
	for _, r := range recs {
		a := applied{seq: r.StreamSeq, status: string(r.Status), at: r.Finished}
		// Applied later than a request acknowledged after it: out of order.
		if a.at.Before(last) {
			res.outOfOrder++
		}
		last = a.at
		log[r.RequestID] = a
	}
	for _, a := range acks {
		got, ok := log[a.id]
		switch {
		case !ok:
			res.lost++
		case got.status != string(model.StatusApplied):
			res.failed++
		case got.seq != a.seq:
			res.outOfOrder++ // applied at another position than acknowledged
		}
	}
	// Duplicates: an append applied twice leaves its unique k twice.
	table := map[int64]int64{}
	rows, err := db.Query(`SELECT k, v FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v int64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		if _, dup := table[k]; dup {
			res.duplicated++
		}
		table[k] = v
	}
	rows.Close()
	want := reference(acks)
	diverged := len(want) != len(table)
	for k, v := range want {
		if got, ok := table[k]; !ok || got != v {
			diverged = true
		}
	}
	if diverged {
		res.divergedModels++
		t.Errorf("%s: final table has %d rows, the replay of the acknowledged requests %d, or values differ", path, len(table), len(want))
	}
}

// checkVersions checks that version numbers are contiguous and that every
// retained version's snapshot and Parquet archive match its manifest
// (snapshot.CheckArchive: every data file, read_parquet equal to the table).
func checkVersions(t *testing.T, ctx context.Context, ctl *controldb.DB, store objstore.Store, work, m string, res *result) {
	all, err := ctl.ListVersions(ctx, m, true)
	if err != nil {
		t.Fatal(err)
	}
	res.versions += len(all)
	for i, v := range all {
		if v.Version != int64(i+1) || (i > 0 && v.LastSeq < all[i-1].LastSeq) {
			t.Errorf("%s: versions not contiguous at %d (last seq %d)", m, v.Version, v.LastSeq)
			res.badVersions++
		}
		if v.Expired != nil {
			continue
		}
		if err := checkVersion(ctx, store, work, v); err != nil {
			t.Errorf("%s version %d: %v", m, v.Version, err)
			res.badVersions++
		}
	}
}

func checkVersion(ctx context.Context, store objstore.Store, work string, v controldb.Version) error {
	rc, err := store.Get(ctx, snapshot.ManifestKey(v.Model, v.Version))
	if err != nil {
		return err
	}
	var mf snapshot.Manifest
	err = json.NewDecoder(rc).Decode(&mf)
	rc.Close()
	if err != nil {
		return err
	}
	if mf.Snapshot.SHA256 != v.SHA256 || mf.Version != v.Version {
		return fmt.Errorf("manifest says version %d sha256 %s, Postgres %s", mf.Version, mf.Snapshot.SHA256, v.SHA256)
	}
	path := filepath.Join(work, fmt.Sprintf("%s-%d.duckdb", v.Model, v.Version))
	if _, _, err := snapshot.Fetch(ctx, store, v, path, blocks.FetchOptions{}); err != nil {
		return fmt.Errorf("snapshot (%s %s): %v", v.SnapshotFormat, v.SHA256, err)
	}
	defer os.Remove(path)
	dir := filepath.Join(work, fmt.Sprintf("%s-%d.archive", v.Model, v.Version))
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return snapshot.CheckArchive(ctx, store, mf.Tables, path, dir)
}

// notifications reads the whole notification stream: the final status
// announced for every request id.
func notifications(t *testing.T, ctx context.Context, c *cluster) map[string]model.Status {
	cl, err := clientFor(c.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := cl.js.OrderedConsumer(ctx, queue.NotifyStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]model.Status{}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if nt, err := notify.Decode(msg.Data()); err == nil && nt.Status.Final() {
				if out[nt.RequestID] != model.StatusApplied {
					out[nt.RequestID] = nt.Status
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		left -= uint64(n)
	}
	return out
}
