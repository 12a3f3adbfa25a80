//go:build duckdb_arrow

package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/queue"
	"github.com/teatree/teatree/reader"
)

// TestReaderBinary runs the reader binary's code from its flags and
// TEATREE_* variables: it serves /readyz, answers $SRV.PING, says a model
// without versions is not found, and stops when its context ends.
func TestReaderBinary(t *testing.T) {
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "empty", SizeClass: "small", Retention: 1})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	env := map[string]string{
		"TEATREE_NATS_URL":     s.NATSURL,
		"TEATREE_POSTGRES_URL": s.PostgresURL,
		"TEATREE_STORE_URL":    s.StoreDir,
		"TEATREE_LOG_LEVEL":    "error",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Reader(ctx, []string{"--dir", filepath.Join(t.TempDir(), "r"), "--health-addr", addr, "--idle-timeout", "1m"}, func(k string) string { return env[k] }, io.Discard)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /readyz: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		_, err := reader.Query(ctx, s.NC, "empty", "SELECT 1", reader.Options{Wait: time.Second})
		if errors.Is(err, model.ErrNotFound) {
			break
		}
		if !errors.Is(err, reader.ErrNoReader) || time.Now().After(deadline) {
			t.Fatalf("query of a model without versions: %v, want ErrNotFound", err)
		}
	}
	if _, err := s.NC.Request("$SRV.PING."+reader.ServiceName, nil, 5*time.Second); err != nil {
		t.Errorf("$SRV.PING: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("reader: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader did not stop")
	}
	// Bad flags are one clear error.
	err := Reader(context.Background(), []string{"--page-bytes", "10"}, func(k string) string { return env[k] }, io.Discard)
	if err == nil || err.Error() != "--page-bytes 10: use at least 1024" {
		t.Errorf("bad --page-bytes: %v", err)
	}
}
