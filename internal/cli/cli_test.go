package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
)

// teactl runs Main with env as its whole environment and returns stdout,
// stderr and the exit code.
func teactl(t *testing.T, ctx context.Context, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, args, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// stackEnv is the environment pointing teactl at s, with its own cache.
func stackEnv(t *testing.T, s *stacktest.Stack) map[string]string {
	return map[string]string{
		"TEATREE_NATS_URL":     s.NATSURL,
		"TEATREE_POSTGRES_URL": s.PostgresURL,
		"TEATREE_STORE_URL":    s.StoreDir,
		"TEATREE_CACHE":        t.TempDir(),
	}
}

// publish makes version n of model m (stacktest.Stack.PublishVersion).
func publish(t *testing.T, s *stacktest.Stack, m string, n int64, rows int) controldb.Version {
	t.Helper()
	return s.PublishVersion(t, m, n, rows)
}

// cacheFiles lists the files under the snapshot cache of env.
func cacheFiles(t *testing.T, env map[string]string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(env["TEATREE_CACHE"], "snapshots"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(env["TEATREE_CACHE"], p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestWatchSinceReplaysRetained: --since 0 prints every retained
// notification of the model, --since N those of later versions (and
// rejections, which have no version), no --since only new ones.
func TestWatchSinceReplaysRetained(t *testing.T) {
	ctx := context.Background()
	url := natsembed.StartTest(t)
	nc, js, err := queue.Connect(url, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := queue.EnsureStreams(ctx, js, queue.Config{}); err != nil {
		t.Fatal(err)
	}
	pub := notify.NewPublisher(js)
	note := func(id, m string, st model.Status, v int64) model.Notification {
		return model.Notification{RequestID: id, Model: m, Function: "append", Status: st, Version: v, Published: time.Now()}
	}
	for _, n := range []model.Notification{
		note("r1", "shop", model.StatusApplied, 1),
		note("r2", "shop", model.StatusFailed, 2),
		note("r3", "shop", model.StatusRejected, 0),
		note("x1", "other", model.StatusApplied, 1),
		note("r4", "shop", model.StatusApplied, 2),
	} {
		if err := pub.Publish(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"TEATREE_NATS_URL": url}
	// watch runs teactl watch until it printed want lines (or 10 s), while
	// publishing live after a second, and returns the request ids printed.
	watch := func(want int, live []model.Notification, args ...string) []string {
		t.Helper()
		wctx, cancel := context.WithCancel(ctx)
		var out, errOut stacktest.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- Main(wctx, append([]string{"watch", "shop", "--json"}, args...), func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
		}()
		time.Sleep(time.Second)
		for _, n := range live {
			if err := pub.Publish(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), "\n") < want && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // nothing more comes
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("watch %v: exit %d: %s", args, code, errOut.String())
		}
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var n model.Notification
			if line == "" {
				continue
			}
			if err := json.Unmarshal([]byte(line), &n); err != nil {
				t.Fatalf("watch %v printed %q: %v", args, line, err)
			}
			ids = append(ids, n.RequestID)
		}
		return ids
	}
	if got, want := watch(4, nil, "--since", "0"), []string{"r1", "r2", "r3", "r4"}; !slices.Equal(got, want) {
		t.Errorf("watch --since 0: %v, want %v", got, want)
	}
	if got, want := watch(3, nil, "--since", "1"), []string{"r2", "r3", "r4"}; !slices.Equal(got, want) {
		t.Errorf("watch --since 1: %v, want %v", got, want)
	}
	if got, want := watch(1, []model.Notification{note("r5", "shop", model.StatusApplied, 3)}), []string{"r5"}; !slices.Equal(got, want) {
		t.Errorf("watch: %v, want only the new %v", got, want)
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, errOut, code := teactl(t, bctx, env, "watch", "shop", "--since", "-1"); code != ExitUsage || !strings.Contains(errOut, "--since -1") {
		t.Errorf("watch --since -1: exit %d, %q", code, errOut)
	}
}

// TestDevRefusesADirectoryInUse: a second teactl dev on a directory whose
// lock is held refuses before starting anything, naming the holder's PID;
// a PID left in the lock file by a dead stack blocks nothing.
func TestDevRefusesADirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	// A Postgres nobody listens on: a stack that got past the lock fails
	// there, later.
	env := map[string]string{"TEATREE_POSTGRES_URL": "postgres://teatree@127.0.0.1:1/none?connect_timeout=1"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, errOut, code := teactl(t, ctx, env, "dev", "--dir", dir, "--nats-port", "0")
	if code != ExitError || !strings.Contains(errOut, fmt.Sprintf("in use by another teactl dev (pid %d)", os.Getpid())) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("second dev: exit %d, stderr %q; want exit 1 and one line naming pid %d", code, errOut, os.Getpid())
	}
	for _, p := range []string{"nats", "env"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("the refused dev created %s", p)
		}
	}
	f.Close()

	// The holder is gone, its PID stays in the file: dev starts (and
	// fails later, at Postgres), and the file holds the new PID.
	os.WriteFile(filepath.Join(dir, "lock"), []byte("999999\n"), 0o644)
	_, errOut, code = teactl(t, ctx, env, "dev", "--dir", dir, "--nats-port", "0")
	if code == ExitOK || strings.Contains(errOut, "in use") {
		t.Errorf("dev after a stale lock: exit %d, %q; want it past the lock", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "lock")); strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("lock file holds %q, want this PID %d", b, os.Getpid())
	}
}

// TestReadCommandsReportVersions: gc prints how many versions it kept,
// not the retention setting; a missing version or model is said once;
// versions --expired marks the expired versions.
func TestReadCommandsReportVersions(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 5})
	for n := int64(1); n <= 3; n++ {
		publish(t, s, "shop", n, int(n))
	}
	env := stackEnv(t, s)
	if out, errOut, code := teactl(t, ctx, env, "gc", "shop"); code != 0 || out != "shop: 3 versions kept (retention 5), 0 expired, 0 objects deleted, 0 blocks deleted (0 bytes), 0 modules deleted\n" {
		t.Errorf("gc: exit %d, %q, %q", code, out, errOut)
	}
	for _, tc := range []struct {
		args      []string
		msg, once string
	}{
		{[]string{"diff", "shop", "99", "3"}, "has no version 99", "teactl versions"},
		{[]string{"diff", "shop", "3", "98"}, "has no version 98", "teactl versions"},
		{[]string{"pull", "shop", "--version", "97", "-o", filepath.Join(t.TempDir(), "x")}, "has no version 97", "teactl versions"},
		{[]string{"query", "shop", "SELECT 1", "--version", "96"}, "has no version 96", "teactl versions"},
		{[]string{"pull", "nosuch", "-o", filepath.Join(t.TempDir(), "x")}, "does not exist", "published version"},
	} {
		_, errOut, code := teactl(t, ctx, env, tc.args...)
		line := strings.TrimSpace(errOut)
		if code != ExitError || !strings.Contains(line, tc.msg) || strings.Contains(line, "\n") || strings.Count(line, tc.once) > 1 || strings.Count(line, "version") > 2 {
			t.Errorf("teactl %s: exit %d, %q; want exit 1 and one line with %q, saying it once", strings.Join(tc.args, " "), code, errOut, tc.msg)
		}
	}
	if _, err := s.Ctl.ExpireVersions(ctx, "shop", 1, 0); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := teactl(t, ctx, env, "versions", "shop", "--expired")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "EXPIRED") {
		t.Fatalf("versions --expired: exit %d, %q, %q", code, out, errOut)
	}
	today := time.Now().Format(time.DateOnly)
	for i, want := range []string{today, today, "-"} { // versions 1 and 2 expired, 3 kept
		f := strings.Fields(lines[i+1])
		if f[0] != fmt.Sprint(i+1) || f[len(f)-2] != want && f[len(f)-1] != want {
			t.Errorf("versions --expired line %q: want version %d marked %q", lines[i+1], i+1, want)
		}
	}
	out, _, _ = teactl(t, ctx, env, "versions", "shop")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || strings.Contains(out, "EXPIRED") {
		t.Errorf("versions: %q", out)
	}
}

// TestQueryCacheIsPerStackAndBounded: the snapshot cache keeps one
// directory per stack and stays within --cache-size by evicting the least
// recently used snapshot.
func TestQueryCacheIsPerStackAndBounded(t *testing.T) {
	ctx := context.Background()
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "shop", SizeClass: "small", Retention: 10})
	var largest int64
	for n := int64(1); n <= 3; n++ {
		largest = max(largest, publish(t, s, "shop", n, int(n)).Bytes)
	}
	query := func(env map[string]string, version int64) {
		t.Helper()
		out, errOut, code := teactl(t, ctx, env, "query", "shop", "SELECT count(*) AS n FROM t", "--version", fmt.Sprint(version), "--format", "csv")
		if code != 0 || out != fmt.Sprintf("n\n%d\n", version) {
			t.Fatalf("query version %d: exit %d, %q, %q", version, code, out, errOut)
		}
		time.Sleep(20 * time.Millisecond) // apart on the file-time clock
	}
	// The same objects under a second store URL are a second stack.
	other := filepath.Join(t.TempDir(), "objects")
	if err := os.CopyFS(other, os.DirFS(s.StoreDir)); err != nil {
		t.Fatal(err)
	}
	env := stackEnv(t, s)
	envB := maps.Clone(env)
	envB["TEATREE_STORE_URL"] = other
	query(env, 1)
	query(envB, 1)
	files := cacheFiles(t, env)
	if len(files) != 2 || filepath.Dir(files[0]) == filepath.Dir(files[1]) {
		t.Errorf("cache of two stacks: %v, want one entry in each stack's directory", files)
	}

	// Room for two snapshots: the least recently used one goes.
	env["TEATREE_CACHE"] = t.TempDir()
	env["TEATREE_CACHE_SIZE"] = fmt.Sprint(2*largest + largest/2)
	query(env, 1)
	query(env, 2)
	query(env, 1) // a hit: version 1 is now the most recently used
	query(env, 3)
	files = cacheFiles(t, env)
	var kept []string
	for _, f := range files {
		v, _, _ := strings.Cut(filepath.Base(f), "-")
		kept = append(kept, v)
	}
	slices.Sort(kept)
	if !slices.Equal(kept, []string{"1", "3"}) {
		t.Errorf("cache bounded to two snapshots after using 1, 2, 1, 3: %v, want versions 1 and 3", files)
	}
	env["TEATREE_CACHE_SIZE"] = "lots"
	if _, errOut, code := teactl(t, ctx, env, "query", "shop", "SELECT 1"); code != ExitUsage || !strings.Contains(errOut, "--cache-size") {
		t.Errorf("bad cache size: exit %d, %q", code, errOut)
	}
}
