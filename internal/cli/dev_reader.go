package cli

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	"github.com/teatree/teatree/internal/app"
	"github.com/teatree/teatree/reader"
)

// startDevReader runs a reader for teactl dev in this process (versions
// under DIR/reader, DuckDB threads and memory_limit as the db-managers'),
// and returns the function that stops it and waits. A reader that cannot
// run (a binary built without the duckdb_arrow tag) is logged: teactl
// query then reads the local snapshot.
func (e *env) startDevReader(ctx context.Context, common app.Common, dir string, o devOpts, log *slog.Logger) (stop func()) {
	cfg := reader.Config{Dir: filepath.Join(dir, "reader"), Threads: o.threads, MemoryLimit: o.memoryLimit}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := cfg.Validate()
		if err == nil {
			err = app.RunReader(ctx, common, cfg, "", e.stderr, nil)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("no reader: teactl query reads pulled snapshots", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
