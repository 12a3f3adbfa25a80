// Package app wires teatree's binaries: configuration from flags and
// TEATREE_* variables, connections to NATS, Postgres and the object store,
// and the Run functions of the dispatcher and the db-manager, so that the
// standalone binaries and `teactl dev` run the very same code.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
)

// Common is the configuration every teatree process shares.
type Common struct {
	NATSURL     string // default nats://127.0.0.1:4222 ($TEATREE_NATS_URL)
	PostgresURL string // required ($TEATREE_POSTGRES_URL)
	StoreURL    string // object store: a directory or s3://bucket/prefix?endpoint=… ($TEATREE_STORE_URL)
	LogLevel    string // debug, info, warn, error; default info ($TEATREE_LOG_LEVEL)
	NATSCreds   string // NATS credentials file (JWT and NKey seed), optional ($TEATREE_NATS_CREDS)
}

// RegisterFlags registers the shared flags.
func (c *Common) RegisterFlags(s *envflag.Set) {
	s.String(&c.NATSURL, "nats-url", "TEATREE_NATS_URL", "nats://127.0.0.1:4222", "NATS server URL")
	s.String(&c.PostgresURL, "postgres-url", "TEATREE_POSTGRES_URL", "", "Postgres URL of the control tables")
	s.String(&c.StoreURL, "store-url", "TEATREE_STORE_URL", "", "object store: a directory, file:///dir, or s3://bucket/prefix?endpoint=URL&region=R&path_style=true")
	s.String(&c.LogLevel, "log-level", "TEATREE_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	s.String(&c.NATSCreds, "nats-creds", "TEATREE_NATS_CREDS", "", "NATS credentials file (user JWT and NKey seed); none by default")
}

// Env returns the TEATREE_* variables that configure another process the
// same way (children of the dispatcher, the DIR/env file of teactl dev).
func (c *Common) Env() []string {
	env := []string{
		"TEATREE_NATS_URL=" + c.NATSURL,
		"TEATREE_POSTGRES_URL=" + c.PostgresURL,
		"TEATREE_STORE_URL=" + c.StoreURL,
		"TEATREE_LOG_LEVEL=" + c.LogLevel,
	}
	if c.NATSCreds != "" {
		env = append(env, "TEATREE_NATS_CREDS="+c.NATSCreds)
	}
	return env
}

// Validate checks that the required settings are there.
func (c *Common) Validate(needPostgres, needStore bool) error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("no NATS URL: set --nats-url or TEATREE_NATS_URL (teactl dev writes them to DIR/env)"))
	}
	if needPostgres && c.PostgresURL == "" {
		errs = append(errs, errors.New("no Postgres URL: set --postgres-url or TEATREE_POSTGRES_URL (teactl dev writes them to DIR/env)"))
	}
	if needStore && c.StoreURL == "" {
		errs = append(errs, errors.New("no object store: set --store-url or TEATREE_STORE_URL (teactl dev writes them to DIR/env)"))
	}
	return errors.Join(errs...)
}

// Logger returns a text logger on w at the configured level.
func (c *Common) Logger(w io.Writer, name string) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(c.LogLevel))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("proc", name)
}

// Deps are the open connections of a process. Fields are nil when not
// asked for.
type Deps struct {
	NC    *nats.Conn
	JS    jetstream.JetStream
	Ctl   *controldb.DB
	Store objstore.Store
}

// Connect opens NATS, and Postgres and the object store when configured.
func (c *Common) Connect(ctx context.Context, name string) (*Deps, error) {
	d := &Deps{}
	var err error
	var opts []nats.Option
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if d.NC, d.JS, err = queue.Connect(c.NATSURL, name, opts...); err != nil {
		return nil, err
	}
	if c.PostgresURL != "" {
		if d.Ctl, err = controldb.Open(ctx, c.PostgresURL); err != nil {
			d.Close()
			return nil, err
		}
	}
	if c.StoreURL != "" {
		if d.Store, err = objstore.Open(ctx, c.StoreURL); err != nil {
			d.Close()
			return nil, fmt.Errorf("open object store: %w", err)
		}
	}
	return d, nil
}

// Close closes what is open.
func (d *Deps) Close() {
	if d.Ctl != nil {
		d.Ctl.Close()
	}
	if d.NC != nil {
		d.NC.Drain()
	}
}
