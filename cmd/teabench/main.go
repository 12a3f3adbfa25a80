// Command teabench measures teatree side by side with NATS JetStream and
// DuckDB alone (`make bench`). See package bench; `teabench -h` lists the
// flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/teatree/teatree/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
