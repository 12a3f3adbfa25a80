// Command dbmanager is the single writer of one teatree model. See package
// dbmanager; flags are listed by `dbmanager --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/teatree/teatree/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := app.DBManager(ctx, os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dbmanager:", err)
		os.Exit(1)
	}
}
