package client_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/queue"
)

// TestWaitWithoutReadingRequests: a client whose NATS permissions allow
// publishing requests and reading notifications, but not reading the
// request stream (README, Security), still waits for its request: from
// its submit time.
func TestWaitWithoutReadingRequests(t *testing.T) {
	ctx := context.Background()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "admin"},
			{Username: "app", Password: "app", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{
					"teatree.req.>",
					"$JS.API.INFO",
					"$JS.API.CONSUMER.CREATE.TEATREE_NOTIFY.>", "$JS.API.CONSUMER.DELETE.TEATREE_NOTIFY.>",
					"$JS.API.CONSUMER.INFO.TEATREE_NOTIFY.>", "$JS.API.CONSUMER.MSG.NEXT.TEATREE_NOTIFY.>",
					"$JS.FC.>", "$JS.ACK.TEATREE_NOTIFY.>",
				}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	_, admin, err := queue.Connect(ns.ClientURL(), "admin", nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, admin, queue.Config{}); err != nil {
		t.Fatal(err)
	}
	_, js, err := queue.Connect(ns.ClientURL(), "app", nats.UserInfo("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Options{JetStream: js, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Submit(ctx, model.Request{ID: "p1", Model: "shop", Function: "drop_table", Args: json.RawMessage(`{"table":"t"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := notify.NewPublisher(admin).Publish(ctx, model.Notification{RequestID: "p1", Model: "shop", Function: "drop_table", Status: model.StatusFailed, Error: "no table t", Seq: rc.Seq}); err != nil {
		t.Fatal(err)
	}
	start, err := client.WaitStart(c, ctx, rc)
	if err != nil || start.All || !start.Time.Equal(rc.Submitted.Add(-client.DefaultClockSkew)) {
		t.Errorf("start without read permission: %+v, %v; want the submit time %v less the skew", start, err, rc.Submitted)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if n, err := c.Wait(wctx, rc); err != nil || n.Status != model.StatusFailed {
		t.Errorf("Wait without read permission: %+v, %v", n, err)
	}
}
