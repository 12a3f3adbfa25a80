package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"

	"github.com/teatree/teatree/console"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/telemetry"
)

// Chromium is the browser the console test drives (Debian's chromium).
const Chromium = "/usr/bin/chromium"

const failure = `append: table "nope" does not exist: create it first with create_table`

// fixture is a stack with model m, a console in front of it, and helpers
// that act as m's db-manager: it holds the real writer lease, binds the
// real consumer dbm-<m>, and publishes versions and notifications the way
// a db-manager does.
type fixture struct {
	s     *stacktest.Stack
	m     string
	epoch int64
	srv   *httptest.Server
	con   *console.Console
}

func newFixture(t *testing.T, m string) *fixture {
	t.Helper()
	s := stacktest.New(t, queue.Config{})
	ctx := context.Background()
	mdl := s.CreateModel(t, controldb.Model{ID: m, SizeClass: "medium"})
	lease, err := queue.AcquireLease(ctx, s.JS, m, "test-host:4242", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lease.Release(ctx) })
	if err := s.Ctl.ClaimEpoch(ctx, m, int64(lease.Epoch())); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.BindModelConsumer(ctx, s.JS, m, mdl.StartSeq, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	con := console.New(s.JS, s.Ctl, stacktest.Logger(t))
	srv := httptest.NewServer(con.Handler())
	t.Cleanup(srv.Close)
	return &fixture{s: s, m: m, epoch: int64(lease.Epoch()), srv: srv, con: con}
}

// publish records version n with rows rows and one applied request.
func (f *fixture) publish(t *testing.T, n int64, rows int64) {
	t.Helper()
	now := time.Now().UTC()
	id := fmt.Sprintf("req-%d", n)
	v := controldb.Version{
		Model: f.m, Version: n, SnapshotURI: fmt.Sprintf("models/%s/versions/%d/snapshot.duckdb", f.m, n),
		SHA256: strings.Repeat(fmt.Sprintf("%x", n%16), 64), ManifestURI: fmt.Sprintf("models/%s/versions/%d/manifest.json", f.m, n),
		Bytes: 1 << (18 + n), FirstSeq: uint64(n), LastSeq: uint64(n), RequestCount: 1, Epoch: f.epoch, Created: now,
		Tables: []controldb.Table{{Name: "flights", ParquetURI: fmt.Sprintf("models/%s/tables/flights/%d.parquet", f.m, n), SHA256: strings.Repeat("a", 64), Rows: rows, Bytes: rows * 20, Schema: []byte(`[]`)}},
	}
	reqs := []controldb.RequestRecord{{RequestID: id, Model: f.m, Function: "append", Status: model.StatusApplied, Version: n, StreamSeq: uint64(n), Submitted: now.Add(-time.Duration(n) * 100 * time.Millisecond), Finished: now}}
	if err := f.s.Ctl.PublishVersion(context.Background(), v, reqs); err != nil {
		t.Fatal(err)
	}
	if err := notify.NewPublisher(f.s.JS).Publish(context.Background(), model.Notification{RequestID: id, Model: f.m, Function: "append", Status: model.StatusApplied, Version: n}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) fail(t *testing.T, id string) {
	t.Helper()
	now := time.Now().UTC()
	err := f.s.Ctl.RecordRequests(context.Background(), []controldb.RequestRecord{{RequestID: id, Model: f.m, Function: "append", Status: model.StatusFailed, Error: failure, StreamSeq: 100, Submitted: now.Add(-40 * time.Millisecond), Finished: now}})
	if err != nil {
		t.Fatal(err)
	}
}

// browser returns a chromedp context on headless Chromium; it skips when
// Chromium is missing unless TEATREE_REQUIRE_BROWSER=1 (CI), where it fails.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		if os.Getenv("TEATREE_REQUIRE_BROWSER") == "1" {
			t.Fatalf("TEATREE_REQUIRE_BROWSER=1 but %s is missing: apt-get install chromium (.ci/run does)", Chromium)
		}
		t.Skipf("%s is missing (apt-get install chromium); set TEATREE_REQUIRE_BROWSER=1 to fail instead", Chromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first Do starts the browser and must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", Chromium, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// artifacts is where screenshots go: $TEATREE_ARTIFACTS/console, else a
// temporary directory. With TEATREE_UPDATE_SCREENSHOTS=1 they are also
// copied to docs/console for the README.
func artifacts(t *testing.T) string {
	dir := t.TempDir()
	if a := os.Getenv("TEATREE_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) == 0 {
		t.Fatalf("screenshot %s is empty", name)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("TEATREE_UPDATE_SCREENSHOTS") == "1" {
		if err := os.WriteFile(filepath.Join("..", "docs", "console", name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot %s", filepath.Join(dir, name))
}

// text returns the text of the first element matching CSS selector sel.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func TestConsoleInBrowser(t *testing.T) {
	f := newFixture(t, "flights")
	ctx := browser(t)
	dir := artifacts(t)
	f.publish(t, 1, 1000)
	f.publish(t, 2, 250000)
	f.fail(t, "bad-append-1")
	f.s.Submit(t, stacktest.Request(f.m, "queued-1", "append", map[string]any{"table": "flights", "rows": []any{}}),
		stacktest.Request(f.m, "queued-2", "append", map[string]any{"table": "flights", "rows": []any{}}))
	// A subscriber of the model's notifications, as a service that acts on
	// new versions would have: a durable consumer with explicit acks.
	sub, err := f.s.JS.CreateConsumer(context.Background(), queue.NotifyStream, jetstream.ConsumerConfig{
		Durable: "version-follower", FilterSubject: queue.NotifySubject(f.m), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The models page lists the model the test created, with its version.
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-model="flights"]`))); err != nil {
		t.Fatalf("models page: %v", err)
	}
	version := text(t, ctx, `tr[data-model="flights"] td:nth-child(2)`)
	pending := text(t, ctx, `tr[data-model="flights"] td:nth-child(4)`)
	running := text(t, ctx, `tr[data-model="flights"] td:nth-child(5)`)
	lastErr := text(t, ctx, `tr[data-model="flights"] td.error`)
	if version != "2" || pending != "2" || running != "running" || !strings.Contains(lastErr, failure) {
		t.Errorf("models page shows version %q, pending %q, db-manager %q, last error %q; want 2, 2, running and %q", version, pending, running, lastErr, failure)
	}
	screenshot(t, ctx, dir, "models.png")

	// The model page shows the failed request's error and plots that
	// render, and a version published while it is open within seconds.
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/models/flights"), chromedp.WaitVisible(chromedp.CSS(`tr[data-version="2"]`))); err != nil {
		t.Fatalf("model page: %v", err)
	}
	reqErr := text(t, ctx, `tr[data-request="bad-append-1"] td.error`)
	if !strings.Contains(reqErr, failure) {
		t.Errorf("failed request shows error %q, want %q", reqErr, failure)
	}
	published := time.Now()
	f.publish(t, 3, 400000)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-version="3"]`))); err != nil {
		t.Fatalf("version 3 did not appear on the open model page within 10 s: %v", err)
	}
	t.Logf("version 3 appeared after %v", time.Since(published).Round(time.Millisecond))
	for _, plot := range []string{"rows", "bytes", "latency"} {
		dots, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll('#plot-%s circle.dot').length`, plot)))
		if err != nil {
			t.Fatalf("plot %s: %v", plot, err)
		}
		w, err := chromedp.Run(ctx, chromedp.Evaluate[float64](fmt.Sprintf(`document.querySelector('#plot-%s polyline').getBBox().width`, plot)))
		if err != nil {
			t.Fatalf("plot %s: %v", plot, err)
		}
		if dots != 3 || w <= 0 {
			t.Errorf("plot %s has %d points and a line %v wide; want 3 points on a drawn line", plot, dots, w)
		}
	}
	// The test's subscriber has read the notifications of versions 1 and 2
	// (before version 3 was published): it is one version behind.
	batch, err := sub.FetchNoWait(2)
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	subs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#subscribers tbody tr').length`))
	if err != nil {
		t.Fatal(err)
	}
	if subs != 1 {
		t.Errorf("model page lists %d subscribers on TEATREE_NOTIFY, want 1 (the test's)", subs)
	}
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`#subscribers td.num:last-child`))); err != nil {
		t.Fatal(err)
	}
	lagDeadline := time.Now().Add(10 * time.Second)
	for lag := ""; lag != "1"; lag = text(t, ctx, `#subscribers tbody tr td:nth-child(4)`) {
		if time.Now().After(lagDeadline) {
			t.Fatalf("subscriber shows %q versions behind, want 1", lag)
		}
		time.Sleep(200 * time.Millisecond)
	}
	screenshot(t, ctx, dir, "model.png")

	// One request: its status and error.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-request="bad-append-1"] a`)), chromedp.WaitVisible(chromedp.CSS(`#error`))); err != nil {
		t.Fatalf("request page: %v", err)
	}
	status, detail := text(t, ctx, `#status`), text(t, ctx, `#error`)
	if status != "failed" || !strings.Contains(detail, failure) {
		t.Errorf("request page shows status %q, error %q; want failed and %q", status, detail, failure)
	}
	screenshot(t, ctx, dir, "request.png")
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, "flights")
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/models/Not_A_Model", http.StatusBadRequest, "model id"},
		{"/models/absent", http.StatusNotFound, `model "absent" does not exist`},
		{"/requests/no%20spaces", http.StatusBadRequest, "request_id"},
		{"/requests/unknown-1", http.StatusNotFound, `request "unknown-1" is not recorded`},
	} {
		code, body := get(t, f.srv.URL+tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) || strings.Count(strings.TrimSpace(body), "\n") != 0 {
			t.Errorf("GET %s: %d %q; want %d and one line with %q", tc.path, code, body, tc.code, tc.want)
		}
	}
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	shutdown, err := telemetry.Setup(ctx, "teatree-test")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	f := newFixture(t, "flights")
	if err := f.con.RegisterMetrics(otel.Meter("test")); err != nil {
		t.Fatal(err)
	}
	f.publish(t, 1, 10)
	// A request queued 2 s ago and not yet applied: publication lag.
	err = f.s.Ctl.RecordRequests(ctx, []controldb.RequestRecord{{RequestID: "waiting-1", Model: f.m, Function: "append", Status: model.StatusQueued, StreamSeq: 9, Submitted: time.Now().Add(-2 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	// The db-manager's instruments, as it creates them, on the same provider.
	f.s.Submit(t, stacktest.Request(f.m, "waiting-1", "append", map[string]any{"table": "flights", "rows": []any{}}))
	c, _ := otel.Meter("github.com/teatree/teatree/dbmanager").Int64Counter("teatree.requests")
	c.Add(ctx, 3)
	code, body := get(t, f.srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for _, want := range []string{"teatree_requests_total", "teatree_lease_epoch{", `model="flights"`, "teatree_version_current{", "teatree_requests_pending{", "teatree_publication_lag_seconds{"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "teatree_lease_epoch{") && !strings.HasSuffix(line, fmt.Sprintf(" %d", f.epoch)) {
			t.Errorf("lease epoch: %s, want %d", line, f.epoch)
		}
		if strings.HasPrefix(line, "teatree_requests_pending{") && !strings.HasSuffix(line, " 1") {
			t.Errorf("pending: %s, want 1", line)
		}
		if strings.HasPrefix(line, "teatree_publication_lag_seconds{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			if v < 2 || v > 60 {
				t.Errorf("publication lag: %s, want about 2 s", line)
			}
		}
	}
}
