package app

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/teatree/teatree/internal/envflag"
	"github.com/teatree/teatree/reader"
	"github.com/teatree/teatree/telemetry"
)

// Reader runs the reader binary: `reader [flags]` (package reader).
func Reader(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("reader", pflag.ContinueOnError)
	s := &envflag.Set{FS: fs, Getenv: getenv}
	var common Common
	var cfg reader.Config
	var healthAddr string
	common.RegisterFlags(s)
	cfg.RegisterFlags(s)
	s.String(&healthAddr, "health-addr", "TEATREE_HEALTH_ADDR", "", "serve /livez, /readyz and /metrics on this address (e.g. :8080)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(s.Err(), common.Validate(true, true), cfg.Validate()); err != nil {
		return err
	}
	shutdown, err := telemetry.Setup(ctx, "teatree-reader")
	if err != nil {
		return err
	}
	defer shutdown(context.WithoutCancel(ctx))
	return RunReader(ctx, common, cfg, healthAddr, stderr, nil)
}

// RunReader connects to NATS, Postgres and the object store of common and
// serves queries with cfg (validated) until ctx ends; healthAddr, when
// set, serves /livez and /readyz. ready is called once the reader
// answers. The reader binary and teactl dev run it.
func RunReader(ctx context.Context, common Common, cfg reader.Config, healthAddr string, stderr io.Writer, ready func()) error {
	log := common.Logger(stderr, "reader")
	deps, err := common.Connect(ctx, "teatree-reader")
	if err != nil {
		return err
	}
	defer deps.Close()
	g, gctx := errgroup.WithContext(ctx)
	if healthAddr != "" {
		g.Go(func() error { return serveHealth(gctx, healthAddr, deps.NC) })
	}
	g.Go(func() error { return reader.New(cfg, log, deps.NC, deps.Ctl, deps.Store).Run(gctx, ready) })
	return g.Wait()
}
