package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/miniotest"
	"github.com/teatree/teatree/internal/pgcluster"
	"github.com/teatree/teatree/objstore"
)

// proc is a child process of the harness; it is killed when the test
// process dies.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// kill sends SIGKILL and waits for the process.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits, with SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// cluster is the system under test: every part a separate process.
type cluster struct {
	t        testing.TB
	dir      string
	logs     *os.File
	leaseTTL time.Duration

	natsPort int
	nats     *proc

	pg    *pgcluster.Cluster
	pgURL string

	minioBin, minioAddr string
	minio               *miniotest.Server
	s3                  objstore.S3Config

	env []string // of dispatcher and db-managers

	mu         sync.Mutex
	dispatcher *proc
	extra      map[int]bool // pids of second writers the harness started
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newCluster starts NATS, Postgres and MinIO; the dispatcher is started by
// superviseDispatcher.
func newCluster(t testing.TB, leaseTTL time.Duration) *cluster {
	minioBin, err := miniotest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	if minioBin == "" {
		t.Skip("MinIO is not built: run scripts/minio.sh (make test does)")
	}
	dir, err := os.MkdirTemp("", "teatree-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // PostgreSQL runs as the postgres user under root
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("chaos: data and logs kept in %s", dir)
		}
	})
	logs, err := os.Create(filepath.Join(dir, "processes.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	c := &cluster{t: t, dir: dir, logs: logs, leaseTTL: leaseTTL, minioBin: minioBin, extra: map[int]bool{}}

	_, port, _ := net.SplitHostPort(freeAddr(t))
	c.natsPort, _ = strconv.Atoi(port)
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q, sync_interval: always }\n", c.natsPort, filepath.Join(dir, "nats"))
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.startNATS()
	t.Cleanup(func() { c.nats.kill() })

	if c.pg, err = startPostgres(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	c.pgURL = c.pg.URL()
	t.Cleanup(func() { c.pg.Stop(context.Background()) })

	c.minioAddr = freeAddr(t)
	c.startMinIO()
	t.Cleanup(func() { c.minio.Stop() })
	if c.s3, err = c.minio.NewBucket(context.Background()); err != nil {
		t.Fatal(err)
	}

	c.env = append(os.Environ(), miniotest.Env()...)
	c.env = append(c.env,
		fmt.Sprintf("TEATREE_NATS_URL=nats://127.0.0.1:%d", c.natsPort),
		"TEATREE_POSTGRES_URL="+c.pgURL,
		"TEATREE_STORE_URL="+miniotest.URL(c.s3),
		"TEATREE_DATA_DIR="+filepath.Join(dir, "models"),
		"TEATREE_LEASE_TTL="+leaseTTL.String(),
		"TEATREE_IDLE_TIMEOUT=5s",
		// Compaction and block GC run inside the fault schedule: the chaos
		// models are small, so compact at 40 % free from 1 MiB, and
		// delete unreferenced blocks after 20 s.
		"TEATREE_COMPACT_FREE=0.4",
		"TEATREE_COMPACT_MIN_BYTES=1048576",
		"TEATREE_BLOCK_GRACE=20s",
		"TEATREE_DUCKDB_THREADS=1",
		"TEATREE_DUCKDB_MEMORY_LIMIT=256MB",
		"TEATREE_LOG_LEVEL=info",
	)
	return c
}

func (c *cluster) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort) }

// start starts a binary with its output in processes.log.
func (c *cluster) start(name string, env []string, args ...string) *proc {
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p
}

func (c *cluster) startNATS() {
	c.nats = c.start("nats-server", os.Environ(), "-c", filepath.Join(c.dir, "nats.conf"))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.Dial("tcp", strings.TrimPrefix(c.natsURL(), "nats://")); err == nil {
			conn.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("nats-server did not listen within 30s")
}

func (c *cluster) startMinIO() {
	var err error
	if c.minio, err = miniotest.StartAt(c.minioBin, filepath.Join(c.dir, "minio"), c.minioAddr); err != nil {
		c.t.Fatal(err)
	}
}

// superviseDispatcher keeps one dispatcher process running until ctx ends,
// as a Deployment would; it returns the number of times the dispatcher
// exited without being killed by the harness.
func (c *cluster) superviseDispatcher(ctx context.Context) (exits func() int) {
	var mu sync.Mutex
	n := 0
	go func() {
		for ctx.Err() == nil {
			p := c.start("dispatcher", c.env)
			c.mu.Lock()
			c.dispatcher = p
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				p.stop(30 * time.Second)
				return
			case <-p.done:
			}
			if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				mu.Lock()
				n++
				mu.Unlock()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// dbManagers returns the pids of running db-manager processes by model,
// read from /proc.
func (c *cluster) dbManagers() map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir("/proc")
	want := filepath.Join(bin, "dbmanager")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) < 3 || args[0] != want {
			continue
		}
		for i, a := range args {
			if a == "--model" && i+1 < len(args) {
				out[args[i+1]] = append(out[args[i+1]], pid)
			}
		}
	}
	return out
}

func startPostgres(ctx context.Context, c *cluster) (*pgcluster.Cluster, error) {
	return pgcluster.Start(ctx, filepath.Join(c.dir, "pg"), slog.New(slog.NewTextHandler(io.Discard, nil)))
}
