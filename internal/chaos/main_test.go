// Package chaos is teatree's fault-injection harness, in the style of
// Jepsen's queue checker and DuckDB's kill-based ACID test: a workload of
// requests submitted by concurrent clients that retry with the same
// request id until they see a PubAck, against separate processes on
// loopback (a nats-server process, Postgres, MinIO, the dispatcher and its
// db-managers) while faults are injected; then an independent check of the
// final snapshots, the Parquet archive, Postgres and the notification
// stream against a reference computed from the acknowledged requests.
//
// TestChaosShort (a few hundred requests, a dozen faults) runs in make
// test; the full run (10,000 requests over 20 models, 200 faults) is
// `make chaos`, a test behind the build tag chaos.
package chaos

import (
	"testing"

	"github.com/teatree/teatree/internal/stacktest"
)

// bin holds the binaries built by TestMain: dispatcher, dbmanager and
// nats-server.
var bin string

func TestMain(m *testing.M) { stacktest.MainWithBinaries(m, &bin, "chaos", "dispatcher", "dbmanager") }
