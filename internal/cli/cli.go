// Package cli implements teactl's commands with cobra. Main is the whole
// program; cmd/teactl only wires it to the process.
//
// Exit codes: 0 success (for submit: durably queued, or applied with
// --wait), 1 an error, 2 bad usage or bad input, 3 the request failed,
// 4 the request was rejected, 5 timed out waiting, 6 a service is
// unreachable, 7 the request was cancelled (submit --wait), 8 a cancel came
// too late (teactl cancel: the request had its outcome already), 9 the
// replay of the request log differs from a published version (teactl model verify).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/model"
)

// Exit codes of teactl.
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitFailed      = 3
	ExitRejected    = 4
	ExitTimeout     = 5
	ExitUnreachable = 6
	ExitCancelled   = 7
	ExitTooLate     = 8
	ExitDiffers     = 9 // teactl model verify: the replay differs from a published version
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

// env is what every command may use.
type env struct {
	ctx     context.Context
	common  app.Common
	getenv  func(string) string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	timeout time.Duration
	cache   cacheLimit // bound of the local cache (query, diff)
	inUse   []string   // cache files the command uses: never evicted
}

// Main runs teactl with args and returns the exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "teactl",
		Short:         "teactl talks to teatree: versioned DuckDB models fed by a durable request log",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(stdin)
	s := &envflag.Set{FS: root.PersistentFlags(), Getenv: getenv}
	e.common.RegisterFlags(s)
	root.PersistentFlags().DurationVar(&e.timeout, "timeout", 2*time.Minute, "how long to wait for a service or a notification")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return s.Err() }
	root.AddCommand(
		devCmd(e), dbmanagerCmd(e), dispatcherCmd(e),
		modelCmd(e), moduleCmd(e), submitCmd(e), appendCmd(e), watchCmd(e), statusCmd(e), functionsCmd(e), migrateCmd(e),
	)
	for _, c := range extraCommands {
		root.AddCommand(c(e))
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "teactl:", err)
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, client.ErrUnreachable):
		return ExitUnreachable
	case errors.Is(err, model.ErrInvalid):
		return ExitUsage
	case errors.Is(err, context.DeadlineExceeded):
		return ExitTimeout
	}
	if isUsage(err) {
		return ExitUsage
	}
	return ExitError
}

// extraCommands are added by other files of the package (read commands).
var extraCommands []func(*env) *cobra.Command

func isUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// session is what a command connected to, and the client over it.
type session struct {
	*app.Deps
	client *client.Client
}

// with connects what a command needs (NATS always, Postgres and the object
// store when asked), runs fn and closes the session: every command that
// talks to the stack goes through it.
func (e *env) with(needPostgres, needStore bool, fn func(d *session) error) error {
	d, err := e.connect(needPostgres, needStore)
	if err != nil {
		return err
	}
	defer d.Close()
	return fn(d)
}

// connect opens what a command needs and maps failures to ExitUnreachable;
// the caller closes the session.
func (e *env) connect(needPostgres, needStore bool) (*session, error) {
	if err := e.common.Validate(needPostgres, needStore); err != nil {
		return nil, withCode(ExitUsage, err)
	}
	c := e.common
	if !needPostgres {
		c.PostgresURL = ""
	}
	if !needStore {
		c.StoreURL = ""
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	d, err := c.Connect(ctx, "teactl")
	if err != nil {
		return nil, withCode(ExitUnreachable, err)
	}
	cache, err := e.cacheDir()
	if err != nil {
		d.Close()
		return nil, err
	}
	cl, err := client.New(client.Options{JetStream: d.JS, Control: d.Ctl, Store: d.Store, CacheDir: cache, CacheBytes: e.cache.bytes, Progress: e.progressBar})
	if err != nil {
		d.Close()
		return nil, err
	}
	return &session{Deps: d, client: cl}, nil
}

// progressBar returns a bar in bytes for a download of v on stderr when it
// is a terminal (client.Options.Progress), else nothing.
func (e *env) progressBar(v controldb.Version) (add func(int64), done func()) {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, nil
	}
	bar := progressbar.DefaultBytes(v.Bytes, fmt.Sprintf("%s v%d", v.Model, v.Version))
	return func(n int64) { bar.Add64(n) }, func() { bar.Finish() }
}

// cacheDir is teactl's local cache ($TEATREE_CACHE, else the user cache
// directory/teatree).
func (e *env) cacheDir() (string, error) {
	if base := e.getenv("TEATREE_CACHE"); base != "" {
		return base, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "teatree"), nil
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
