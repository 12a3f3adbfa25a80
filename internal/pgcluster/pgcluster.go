// Package pgcluster runs a private PostgreSQL cluster from the local
// PostgreSQL binaries: the control database of `teactl dev` and of the
// tests when no Postgres URL is given.
//
// The cluster lives in one directory (created with initdb on first start,
// kept afterwards), listens on 127.0.0.1 only on a port chosen at creation
// and recorded in the directory, trusts local connections, and runs the
// postmaster as a child process that receives SIGINT (fast shutdown) when
// its parent dies, so nothing outlives the process that started it.
// PostgreSQL refuses to run as root; when started by root, the cluster runs
// as the "postgres" system user that the distribution packages create.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Database is the database created in every cluster for teatree.
const Database = "teatree"

// Cluster is a running private cluster.
type Cluster struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan error
}

// FindBinaries returns the directory holding initdb and postgres: PATH
// first, then /usr/lib/postgresql/<newest>/bin. The error says what to
// install.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("pgcluster: no PostgreSQL server binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin: " +
		"install them (Debian/Ubuntu: apt-get install postgresql) or pass a Postgres URL (--postgres-url or TEATREE_POSTGRES_URL)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start creates the cluster in dir if it does not exist yet, starts it and
// waits until it accepts connections and the teatree database exists.
func Start(ctx context.Context, dir string, log *slog.Logger) (*Cluster, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if cred != nil {
		if err := reachable(dir, cred); err != nil {
			return nil, err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	portFile := filepath.Join(dir, "teatree.port")
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := initdb(ctx, bin, dir, cred, log); err != nil {
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(portFile, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	data, err := os.ReadFile(portFile)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %s is not a teatree cluster (no teatree.port): %w", dir, err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("pgcluster: bad port in %s: %w", portFile, err)
	}

	c := &Cluster{dir: dir, port: port, done: make(chan error, 1)}
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200")
	logFile, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	defer logFile.Close()
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	log.Info("postgres starting", "dir", dir, "port", port)
	if err := c.wait(ctx); err != nil {
		_ = c.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// credential returns the user to run PostgreSQL as: nil (the current
// user) unless the process runs as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("pgcluster: PostgreSQL does not run as root and there is no \"postgres\" user: run as another user, install the postgresql package, or pass a Postgres URL")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// reachable checks that the postgres user can enter every parent of dir.
func reachable(dir string, cred *syscall.Credential) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm()&0o001 == 0 && st.Uid != cred.Uid {
			return fmt.Errorf("pgcluster: PostgreSQL runs as user %d and cannot enter %s (mode %v): chmod o+x it or choose a directory elsewhere", cred.Uid, p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func initdb(ctx context.Context, bin, dir string, cred *syscall.Credential, log *slog.Logger) error {
	log.Info("creating Postgres cluster", "dir", dir)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", dir, "-U", "teatree", "--auth=trust", "-E", "UTF8", "--locale=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w\n%s", dir, err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// wait polls until the teatree database accepts connections, creating it
// on the first start.
func (c *Cluster) wait(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.url("postgres"))
		if err == nil {
			defer conn.Close(ctx)
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, Database).Scan(&exists); err != nil {
				return fmt.Errorf("pgcluster: %w", err)
			}
			if !exists {
				if _, err := conn.Exec(ctx, "CREATE DATABASE "+Database); err != nil {
					return fmt.Errorf("pgcluster: create database: %w", err)
				}
			}
			return nil
		}
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("pgcluster: postgres exited (%v); see %s", err, filepath.Join(c.dir, "postgres.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: postgres did not accept connections within 60s: %v; see %s", err, filepath.Join(c.dir, "postgres.log"))
		}
	}
}

func (c *Cluster) url(db string) string {
	return fmt.Sprintf("postgres://teatree@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// URL is the connection URL of the teatree database.
func (c *Cluster) URL() string { return c.url(Database) }

// Stop shuts the cluster down (fast shutdown: connections are closed,
// everything committed is kept) and waits for it; when ctx ends first the
// postmaster gets SIGQUIT (immediate shutdown, recovered at next start).
func (c *Cluster) Stop(ctx context.Context) error {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		<-c.done
		return fmt.Errorf("pgcluster: fast shutdown timed out: %w", ctx.Err())
	}
}
