// Package dbmanager is the single writer of one model: it holds the model's
// writer lease, applies the model's requests in stream order and exactly
// once to the model's read-write DuckDB file, and publishes every new state
// as an immutable version.
//
// # Structure
//
// The db-manager owns the model's live DuckDB file (DataDir/<model>/), its
// bookkeeping schema _teatree, the cut and publication of versions and
// the model's durable consumer. It reaches each outside system through one
// package at the repository root (adapters of different systems do not
// import each other):
//
//	NATS JetStream   queue (request stream, consumer, writer lease), notify (notifications)
//	Postgres         controldb (model records, versions, request log, fenced by the lease epoch)
//	object store     objstore (directory or S3), through blocks (block maps, block store) and snapshot (manifests, keys, compact copies)
//	DuckDB           duck (opening with threads, memory_limit, external access off)
//	OpenTelemetry    telemetry (trace context through NATS headers)
//
// The core it applies comes from model (ids, requests, sentinel errors),
// functions (the closed set of functions), profile (column profiles of
// the data files) and retention (which versions to keep). It reads no
// flags: Config documents every field with its Default* constant, New
// calls Config.WithDefaults then Config.Validate, and the dbmanager
// binary (cmd/dbmanager, wired in internal/app) registers the flags and
// their TEATREE_* environment variables. Tools and wiring (the binaries'
// flags, the test stack, the e2e, chaos and bench harnesses) are under
// internal/; see the README's Layout table.
//
// While it holds the lease it is the NATS micro service
// svcinfo.DBManager (metadata model=<model>; teactl ping and teactl info):
// its endpoint "info" reports the position, the consumer's lag, memory
// (Go and DuckDB) and the last failed request or retried step.
//
// # Exactly once
//
// The DuckDB file is the source of truth for progress. Schema _teatree in
// the file holds:
//
//	_teatree.position      the last TEATREE_REQUESTS sequence applied
//	_teatree.applied       request ids seen and not yet published, with sequence, status, error and args digest
//	_teatree.refused       requests that reused another request's id (rejected), not yet published
//	_teatree.table_change  the last sequence that changed each table, and the last that did more than append rows
//	_teatree.outbox        versions cut and whether they are published
//	_teatree.settled       ranges of requests that changed nothing, and whether they are published
//
// A batch of requests is applied in one DuckDB transaction (group commit)
// that also records the batch in _teatree.applied and advances
// _teatree.position; only after COMMIT is the last message acknowledged
// (AckAll, double-ack). At start the db-manager recreates its durable
// consumer dbm-<model> at position+1, so a crash between commit and ack
// re-delivers nothing that was applied, and a redelivered message (sequence
// at or below the position) or a retry of a request id already recorded is
// acknowledged without being applied again. A request id belongs to the
// first request published under it: a later request with the same id and
// another model, function or args (Request.Digest) is rejected ("request id
// … is already used by …"), never applied, and the first request's record
// is left alone. The owner is looked up in _teatree.applied, then in
// Postgres' request log (ids of other models, and of requests older than
// the snapshot a lost volume was restored from).
//
// DuckDB has no savepoints, so a request that fails takes its transaction
// down: the transaction is rolled back, the requests before the failing one
// are applied again and committed together with the failure record, and the
// rest of the batch continues in a new transaction. Every request is applied
// at most twice in memory and committed once.
//
// # Failure policy
//
// One function, judge (failure.go), gives every error a verdict:
// applied; failed (the request's own fault: model.ErrInvalid, DuckDB
// constraint, conversion, binder, parser, catalog … errors; recorded and
// notified for good); retry (DuckDB out of memory, interrupt, transaction
// conflict, I/O, connection; the object store, Postgres, a shutdown: the
// batch or publication is rolled back and tried again after a backoff,
// nothing fails); fatal (ErrFatal, a stale epoch, a DuckDB fatal or
// internal error: Run returns, the supervisor restarts the process). The
// apply retry and the publication loop wait through one ctx-aware backoff
// (retryBackoff, 500 ms growing to 30 s). See docs/decisions.md, Failure
// policy.
//
// # Versions
//
// A publisher runs beside the applier. Whenever it is free and the position
// moved, it cuts a version. A version must change something: when no
// request since the last cut was applied (all failed or were rejected), the
// range is recorded in _teatree.settled instead and published without a
// version: request log records (fenced by the epoch) and notifications,
// resumed after a crash like a version. At low load every batch becomes a
// version; at high load many batches coalesce into one.
//
// The snapshot of a version is the live file itself, as of the cut
// (package blocks). The cut holds the applier off between two batches,
// deletes the bookkeeping rows Postgres already holds (the records of
// requests in published versions and settled ranges), CHECKPOINTs, maps
// the file's blocks (only the blocks whose stored checksum changed are
// hashed, plus 1/64 of the file as a scrub) and captures the blocks the
// previous cut lacks (a reflink clone, or a spool of those blocks), then
// begins a read transaction pinned to that state and lets the applier go
// on. In that transaction it counts the rows of every table and writes the
// Parquet data files of what changed since the previous version (archive.go:
// the new rows of an append, the files whose rows an update or delete
// changed, whole tables when small or re-created); then it records the cut
// in _teatree.outbox, with the block map in the version's directory. The
// applier waits only for the checkpoint and the capture. While the data
// files are written, the captured blocks the previous version's map does
// not have already go up to the block store (each verified against the
// map before it is put; content-addressed, so a cut that is never
// recorded leaves only unreferenced blocks, which block GC deletes after
// its grace).
//
// Publishing an outbox row uploads those blocks, unless this process
// uploaded them at the cut less than blocks.Store.ReuseAge ago (a block
// already stored is reused if it is younger than that, at most half the
// block grace of GC), then the block map; concurrently (at most 4 at a
// time) the new Parquet data files (content-addressed) with their
// profiles; the first failure cancels the others and nothing is recorded.
// Every object is durable before the manifest is put (on a directory store
// each object file is synced before its rename and each directory once per
// batch, objstore.Batch). Then the
// manifest, which lists every table's data files; records the version in Postgres with the map's root digest,
// the bytes uploaded and whether it was a compaction (fenced by the lease
// epoch); notifies its requests as one atomic batch (package notify); and
// marks the row published. Every step is idempotent, so a crash anywhere
// resumes the publication at the next start from the captured blocks.
//
// # What is verified
//
//   - Every block read for the map is checked against DuckDB's stored
//     checksum (a torn write or a file changing under the map is refused),
//     and every block uploaded is hashed again against the map.
//   - Every new Parquet data file's row count (its footer) must equal the
//     rows counted in the same transaction, else the publication stops
//     with ErrFatal (the process restarts and cuts again); a table's files
//     must add up to its row count, and a file kept from the previous
//     version has had its range's rows counted (appends) or counted and
//     hashed (other changes) again (archive.go).
//   - Blocks not uploaded are the previous version's, verified when it was
//     published; every 64 versions each block has been hashed again
//     (blocks.ScrubEvery), and a mismatch is counted.
//   - A compaction opens its compact copy in a separate read-only DuckDB
//     instance and compares every table's row count with the live file's
//     before the copy replaces it; a mismatch is ErrFatal and the old file
//     stays.
//   - A reader (teactl pull, disaster recovery) verifies every block and the
//     map's root against Postgres.
//
// A fresh instance is not opened on a full copy of every version: the
// version is the live file, which DuckDB itself has just checkpointed.
//
// # Compaction
//
// DuckDB re-uses the free blocks of a file only at later checkpoints, and
// the live file is never rewritten whole, so it accumulates free space.
// When a cut finds at least Config.CompactFree (0.5) of the blocks free and
// at least CompactMinBytes (64 MiB) of them, it first replaces the live
// file by a compact copy (snapshot.Take), with the applier held off, and
// cuts the version from it: it uploads the whole new file once, and is
// marked compaction in Postgres, the manifest and `teactl versions`.
//
// # Lease
//
// The writer lease (package queue) is acquired before the DuckDB file is
// opened; its epoch is claimed in Postgres, and every Postgres write carries
// it. A db-manager that cannot renew its lease stops before its next commit
// and exits. Beside the lease, a process holds an exclusive flock on the
// model directory's writer.lock from open to exit: a writer stopped past its
// lease (SIGSTOP, a long pause) keeps the directory, so its successor fails
// to start (and is restarted) until it has exited; DuckDB's own fcntl lock
// is not enough, since a compaction releases it while it swaps the file.
//
// # Disaster recovery
//
// When the DuckDB file is missing (a lost volume) and a version was
// published, the db-manager rebuilds the file from the block store (the
// latest version's map and blocks, each verified; a whole-file snapshot of
// an older release by its sha256) and resumes from the position recorded
// in it: the request log is replayed from there. The snapshot carries only
// the records of its own requests; retries of older requests are
// recognised through Postgres' request log.
//
// # Verify
//
// Verify (verify.go; teactl model verify) replays the retained request log
// into a scratch copy with a Manager that publishes nothing: from the
// snapshot of a version's parent, each version's applied requests (its
// lineage, read from the stream by sequence) go through applyItems, the
// applier's own loop, and every table of the result is compared with the
// published version. See docs/decisions.md, "Rebuild check".
//
// # Reads across models
//
// A request that reads other models (refresh args.reads, reads.go) is
// applied only with the versions the dispatcher pinned in the request
// log, in a transaction of its own: the versions are pulled into
// reads/<model>/<N>.duckdb (reusing the blocks of the one pulled before),
// attached READ_ONLY under their aliases before BEGIN, detached after
// COMMIT, and recorded in the version's lineage.
package dbmanager
