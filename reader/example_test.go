package reader_test

import (
	"context"
	"fmt"
	"log"

	"github.com/nats-io/nats.go"

	"github.com/teatree/teatree/reader"
)

// A query through a reader: Arrow record batches, page by page. Close
// always; closing before the end cancels the query on the reader.
func ExampleQuery() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	res, err := reader.Query(context.Background(), nc, "flights", "SELECT origin, avg(delay) FROM flights GROUP BY origin", reader.Options{})
	if err != nil {
		log.Fatal(err) // reader.ErrNoReader: none runs; model.ErrInvalid: a bad query; reader.ErrLimit: too large
	}
	defer res.Close()
	var rows int64
	for res.Next() {
		rows += res.RecordBatch().NumRows()
	}
	if err := res.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d rows of %s version %d (%s)\n", rows, res.Model, res.Version, res.Schema())
}
