// Package client is the Go client of teatree: what teactl, teabench, the
// tests and outside Go programs use to submit requests to a model, wait for
// their outcome, and read the versions the service publishes.
//
// A Client is made with New from the connections it needs (Options): a
// JetStream context for requests and notifications (queue.Connect), the
// Postgres control database for versions (controldb.Open), and the object
// store for staged files, snapshots and Parquet files (objstore.Open). A
// method whose connection is nil returns an error wrapping
// ErrNotConfigured, so a program that only submits needs only NATS. The
// Client does not own the connections: close them yourself.
//
// # Writing
//
//   - Submit queues one request (inline args) on teatree.req.<model> and
//     returns a Receipt once JetStream stored it: durably queued, not yet
//     applied. Prepare is the check Submit makes before sending, usable
//     without a connection.
//   - SubmitFile stages a local file (Parquet, CSV, JSON, Arrow IPC; CSV
//     and JSON gzip or zstd) in the object store under
//     staging/<model>/<request_id>/ and submits an append of it: it is
//     PrepareFile (the checks, no connection), Stage (the upload) and
//     Submit.
//   - Wait blocks until the request of a Receipt has its final
//     notification (applied, failed, rejected or cancelled) and returns it. It reads
//     the model's notifications from the time the request stream stored
//     the request, so it finds the notification however long ago the
//     request was submitted (while TEATREE_NOTIFY retains it, 7 days by
//     default): a Receipt can be kept and waited for later, and a
//     duplicate submit (a retry) waits for the original's outcome.
//   - Watch streams a model's notifications.
//   - Cancel records the cancel of a queued request (KV bucket
//     teatree-cancels); Wait on its receipt tells whether it came in time
//     (cancelled) or not (applied, with the version).
//   - Pin and Unpin keep a version past retention under a name; Resolve
//     reads MODEL, MODEL@N and MODEL@PIN.
//   - Fork creates a model whose first version is another model's version,
//     sharing its blocks and data files (its block namespace).
//
// # Reading
//
//   - Versions lists a model's versions, Version looks one up (0: the
//     latest).
//   - Pull writes a version's snapshot to a local file, a DuckDB file the
//     stock DuckDB CLI opens: incrementally (only the blocks the file at the
//     path and the cached snapshots lack are downloaded), every block
//     verified against its sha256, the block map against the root digest
//     Postgres records and the row counts against the content index; the
//     file is renamed into place only when all of that holds.
//   - Snapshot is Pull into the cache under Options.CacheDir (bounded by
//     Options.CacheBytes, least recently used first); Open opens a version
//     for reading from its cached snapshot or from its Parquet archive;
//     Query runs one SELECT on a version's cached snapshot, never on the
//     model's live file.
//
// # Errors
//
// Bad input wraps model.ErrInvalid and is refused before anything is
// sent; a missing model or version wraps model.ErrNotFound; a request id
// already used by another request wraps model.ErrConflict; a snapshot or
// data file that does not match its digest matches ErrCorrupt; a service
// that could not be reached (or failed) matches ErrUnreachable. Messages
// are meant for a user: teactl prints them as they are. Wait returns a
// failed or rejected request as a notification, not as an error.
//
// The examples need a running stack (teactl dev; its DIR/env has the
// TEATREE_* variables) and are compiled, not run, except those whose
// output is shown.
package client
