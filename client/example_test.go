package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/teatree/teatree/client"
	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
	"github.com/teatree/teatree/notify"
	"github.com/teatree/teatree/objstore"
	"github.com/teatree/teatree/queue"
)

// connect opens the stack that `teactl dev --dir DIR` runs (after
// `. DIR/env`).
func connect(ctx context.Context) *client.Client {
	_, js, err := queue.Connect(os.Getenv("TEATREE_NATS_URL"), "example")
	if err != nil {
		log.Fatal(err)
	}
	ctl, err := controldb.Open(ctx, os.Getenv("TEATREE_POSTGRES_URL"))
	if err != nil {
		log.Fatal(err)
	}
	store, err := objstore.Open(ctx, os.Getenv("TEATREE_STORE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(client.Options{JetStream: js, Control: ctl, Store: store})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// Submit a request with inline args and wait for its outcome.
func ExampleClient_Submit() {
	ctx := context.Background()
	c := connect(ctx)
	rc, err := c.Submit(ctx, model.Request{
		Model:    "shop",
		Function: "create_table",
		Args:     json.RawMessage(`{"table":"orders","columns":[{"name":"id","type":"BIGINT"},{"name":"item","type":"VARCHAR"}],"primary_key":["id"]}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s queued at stream sequence %d\n", rc.RequestID, rc.Seq)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := c.Wait(wctx, rc)
	if err != nil {
		log.Fatal(err) // no outcome yet: the request stays queued
	}
	if n.Status != model.StatusApplied {
		log.Fatalf("%s: %s", n.Status, n.Error)
	}
	fmt.Println("applied in version", n.Version)
}

// Stage a Parquet file and append it to a table.
func ExampleClient_SubmitFile() {
	ctx := context.Background()
	c := connect(ctx)
	rc, err := c.SubmitFile(ctx, "shop", "orders", "orders.parquet", client.FileOptions{})
	if err != nil {
		log.Fatal(err)
	}
	n, err := c.Wait(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.Status, n.Version)
}

// Wait for a request submitted earlier, by its receipt: kept as JSON
// here, waited for by another process, however long after.
func ExampleClient_Wait() {
	ctx := context.Background()
	c := connect(ctx)
	saved := []byte(`{"request_id":"0199e4c2-7d3a-7b4e-9a51-2f0c4d6e8a10","model":"shop","function":"append","stream_seq":42}`)
	var rc client.Receipt
	if err := json.Unmarshal(saved, &rc); err != nil {
		log.Fatal(err)
	}
	n, err := c.Wait(ctx, rc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.RequestID, n.Status, n.Error)
}

// Print a model's notifications as they come.
func ExampleClient_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := connect(ctx)
	sub, err := c.Watch(ctx, "shop", notify.Start{})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Stop()
	for {
		n, err := sub.Next(ctx)
		if err != nil {
			return // ctx ended
		}
		fmt.Println(n.Status, n.Version, n.RequestID)
	}
}

// List the versions of a model.
func ExampleClient_Versions() {
	ctx := context.Background()
	c := connect(ctx)
	vs, err := c.Versions(ctx, "shop", false)
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range vs {
		fmt.Println(v.Version, v.Created.Format(time.RFC3339), v.RequestCount)
	}
}

// Pull the latest snapshot to a file that `duckdb -readonly` opens; the
// next pull over the same file downloads only the blocks that changed.
func ExampleClient_Pull() {
	ctx := context.Background()
	c := connect(ctx)
	v, err := c.Version(ctx, "shop", 0)
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.Pull(ctx, v, "shop.duckdb")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: version %d, %d bytes downloaded, %d reused\n", p.Path, p.Version, p.Fetched, p.Reused)
}

// Run a SELECT on the latest version's snapshot.
func ExampleClient_Query() {
	ctx := context.Background()
	c := connect(ctx)
	rows, err := c.Query(ctx, "shop", 0, "SELECT item, count(*) FROM orders WHERE id > ? GROUP BY item ORDER BY 2 DESC", 100)
	if err != nil {
		log.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var item string
		var n int64
		if err := rows.Scan(&item, &n); err != nil {
			log.Fatal(err)
		}
		fmt.Println(item, n)
	}
	if err := rows.Err(); err != nil {
		log.Fatal(err)
	}
}

// Prepare checks a request as Submit does, without any connection.
func ExamplePrepare() {
	_, err := client.Prepare(model.Request{Model: "shop", Function: "explode", Args: json.RawMessage(`{}`)})
	fmt.Println(errors.Is(err, model.ErrInvalid))
	r, err := client.Prepare(model.Request{Model: "shop", Function: "drop_table", Args: json.RawMessage(`{"table":"orders"}`)})
	fmt.Println(err, model.ValidateRequestID(r.ID) == nil, !r.Submitted.IsZero())
	// Output:
	// true
	// <nil> true true
}

// ParquetSelect is how any DuckDB reads a table of a version from its
// Parquet archive (columns stored encoded, such as HUGEINT, are cast back;
// these are stored as they are).
func ExampleParquetSelect() {
	t := controldb.Table{Name: "orders", Schema: json.RawMessage(`[{"name":"id","type":"BIGINT"},{"name":"item","type":"VARCHAR"}]`)}
	fmt.Println(client.ParquetSelect(t, []string{"s3://bucket/models/shop/tables/orders/a.parquet", "s3://bucket/models/shop/tables/orders/b.parquet"}))
	// Output:
	// SELECT * FROM read_parquet(['s3://bucket/models/shop/tables/orders/a.parquet', 's3://bucket/models/shop/tables/orders/b.parquet'])
}
