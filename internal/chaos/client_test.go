package chaos

import (
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teatree/teatree/queue"
)

// client is the harness's NATS connection; it reconnects by itself
// across nats-server restarts.
type client struct {
	nc *nats.Conn
	js jetstream.JetStream
}

var (
	clientMu sync.Mutex
	clients  = map[string]*client{}
)

func clientFor(url string) (*client, error) {
	clientMu.Lock()
	defer clientMu.Unlock()
	if c, ok := clients[url]; ok && !c.nc.IsClosed() {
		return c, nil
	}
	nc, js, err := queue.Connect(url, "chaos")
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, js: js}
	clients[url] = c
	return c, nil
}
