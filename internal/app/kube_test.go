package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/teatree/teatree/internal/natsembed"
	"github.com/teatree/teatree/queue"
)

func TestDispatcherHealth(t *testing.T) {
	url := natsembed.StartTest(t)
	nc, _, err := queue.Connect(url, "health")
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHealth(ctx, addr, nc) }()
	get := func(path string) int {
		for range 100 {
			resp, err := http.Get("http://" + addr + path)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: no answer", path)
		return 0
	}
	if c := get("/livez"); c != 200 {
		t.Fatalf("livez %d", c)
	}
	if c := get("/readyz"); c != 200 {
		t.Fatalf("readyz %d while connected", c)
	}
	if c := get("/metrics"); c != 200 {
		t.Fatalf("metrics %d, want the Prometheus page", c)
	}
	nc.Close()
	if c := get("/readyz"); c != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d after the NATS connection closed", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
