package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/teatree/teatree/dbmanager"
	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/internal/pgcluster"
	"github.com/teatree/teatree/model"
)

// devOpts are the options of teactl dev.
type devOpts struct {
	dir         string
	natsPort    int
	postgresURL string
	storeURL    string
	idleTimeout time.Duration
	threads     int
	memoryLimit string
	consoleAddr string
}

func devCmd(e *env) *cobra.Command {
	var o devOpts
	c := &cobra.Command{
		Use:   "dev",
		Short: "run the whole stack on this machine in the foreground (Ctrl-C stops it)",
		Long: `dev starts an in-process NATS server with JetStream (files under DIR/nats,
sync_interval always, loopback only), Postgres (--postgres-url, or a private
cluster under DIR/postgres made with the local PostgreSQL binaries), a local
directory object store (DIR/objects), and the dispatcher, which starts a
db-manager per model as a child process (DuckDB files under DIR/models),
and a reader that serves teactl query (versions under DIR/reader).

It writes the TEATREE_* variables that point other teactl commands at it to
DIR/env ('. DIR/env' in a shell). Starting again on the same DIR keeps all
data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("postgres-url") {
				o.postgresURL = e.getenv("TEATREE_POSTGRES_URL")
			}
			return e.dev(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "teatree-dev", "directory for all data of the dev stack")
	f.IntVar(&o.natsPort, "nats-port", 4322, "NATS port on 127.0.0.1 (0: any free port)")
	f.StringVar(&o.storeURL, "dev-store-url", "", "object store URL (default: DIR/objects)")
	f.DurationVar(&o.idleTimeout, "idle-timeout", time.Minute, "stop a db-manager idle this long")
	f.IntVar(&o.threads, "duckdb-threads", dbmanager.DefaultThreads, "DuckDB threads of each db-manager")
	f.StringVar(&o.memoryLimit, "duckdb-memory-limit", dbmanager.DefaultMemoryLimit, "DuckDB memory_limit of each db-manager")
	f.StringVar(&o.consoleAddr, "console-addr", app.DefaultConsoleAddr, "address of the read-only web console (a free loopback port when the default is taken; empty: none)")
	return c
}

func (e *env) dev(ctx context.Context, o devOpts) error {
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	common := e.common
	log := common.Logger(e.stderr, "dev")

	ns, err := natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "nats"), Port: o.natsPort})
	if err != nil {
		return withCode(ExitUnreachable, fmt.Errorf("start NATS on 127.0.0.1:%d: %w (another process uses the port? pass --nats-port)", o.natsPort, err))
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	common.NATSURL = ns.ClientURL()

	if o.postgresURL != "" {
		common.PostgresURL = o.postgresURL
	} else {
		pg, err := pgcluster.Start(ctx, filepath.Join(dir, "postgres"), log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := pg.Stop(sctx); err != nil {
				log.Warn("stop Postgres", "err", err)
			}
		}()
		common.PostgresURL = pg.URL()
	}
	common.StoreURL = o.storeURL
	if common.StoreURL == "" {
		common.StoreURL = filepath.Join(dir, "objects")
		if err := os.MkdirAll(common.StoreURL, 0o755); err != nil {
			return err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := app.DispatcherConfig{Common: common, DataDir: filepath.Join(dir, "models"), Threads: o.threads, MemoryLimit: o.memoryLimit, Migrate: true}
	cfg.Dispatcher.IdleTimeout = o.idleTimeout
	consoleURL := ""
	if o.consoleAddr != "" {
		ln, err := net.Listen("tcp", o.consoleAddr)
		if err != nil && o.consoleAddr == app.DefaultConsoleAddr {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			return fmt.Errorf("console: %w (another process uses the port? pass --console-addr, or an empty one for no console)", err)
		}
		defer ln.Close()
		cfg.ConsoleListener = ln
		consoleURL = "console: http://" + ln.Addr().String() + "/\n"
	}

	envFile := filepath.Join(dir, "env")
	var b strings.Builder
	for _, kv := range common.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if k == "TEATREE_LOG_LEVEL" {
			continue
		}
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	// DIR/env appears once the stack accepts commands.
	cfg.Ready = func() error {
		if err := os.WriteFile(envFile, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "teatree dev stack running; point teactl at it with:\n\n  . %s\n\n%s\n%sCtrl-C stops it.\n", envFile, b.String(), consoleURL)
		return nil
	}
	defer e.startDevReader(ctx, common, dir, o, log)()
	err = app.RunDispatcher(ctx, cfg, []string{exe, "dbmanager"}, e.stderr)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("dev stack stopped")
	return err
}

// lockDir takes an exclusive flock on DIR/lock, so that a second teactl
// dev cannot start a second NATS server on the same JetStream store or
// overwrite DIR/env, and writes this process's PID into the file. The
// kernel releases the lock when the process ends, however it ends: a PID
// left in the file by a dead stack blocks nothing. Closing the returned
// file releases the lock. It returns model.ErrConflict, naming the running
// stack's PID, when the directory is in use.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := "unknown"
			if b, _ := io.ReadAll(io.LimitReader(f, 32)); len(bytes.TrimSpace(b)) > 0 {
				pid = string(bytes.TrimSpace(b))
			}
			return nil, fmt.Errorf("%w: %s is in use by another teactl dev (pid %s): stop that one first, or pass another --dir", model.ErrConflict, dir, pid)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
