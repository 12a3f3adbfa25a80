// Package natsembed runs an in-process NATS server with JetStream, the way
// `teactl dev` and the tests do: file storage, sync_interval always (every
// acknowledged publish is on disk), bound to loopback.
package natsembed

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure Start.
type Options struct {
	// StoreDir holds JetStream's files; required.
	StoreDir string
	// Host to listen on; default 127.0.0.1 (loopback only).
	Host string
	// Port to listen on; 0 picks a free port (-1 in nats-server terms).
	Port int
	// NoSync switches off sync_interval always. Only benchmarks comparing
	// with the raw engine use it.
	NoSync bool
	// Debug logs the server's own output to stderr.
	Debug bool
}

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("natsembed: StoreDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "teatree-dev",
		Host:       o.Host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if !o.NoSync {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // ignored with SyncAlways, as in the server's config parser
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	if o.Debug {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s:%d not ready after 30s", o.Host, o.Port)
	}
	return s, nil
}

// StartTest starts a server for one test in a temporary directory, shut
// down by t.Cleanup, and returns its client URL.
func StartTest(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "teatree-nats-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
		os.RemoveAll(dir)
	})
	return s.ClientURL()
}
