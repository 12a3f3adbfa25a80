// Package dbmanager is the single writer of one model: it holds the model's
// writer lease, applies the model's requests in stream order and exactly
// once to the model's read-write DuckDB file, and publishes every new state
// as an immutable version.
//
// # Exactly once
//
// The DuckDB file is the source of truth for progress. Schema _teatree in
// the file holds:
//
//	_teatree.position      the last TEATREE_REQUESTS sequence applied
//	_teatree.applied       every request id seen, with its sequence, status, error and args digest
//	_teatree.refused       requests that reused another request's id (rejected)
//	_teatree.table_change  the last sequence that changed each table
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
// # Versions
//
// A publisher runs beside the applier. Whenever it is free and the position
// moved, it cuts a version: inside one read transaction it reads the
// position and copies the model's tables and _teatree.position into a new
// snapshot file (package snapshot; snapshot isolation lets the applier keep
// committing), then records the cut in _teatree.outbox. A version must
// change something: when no request since the last cut was applied (all
// failed or were rejected), the range is recorded in _teatree.settled
// instead and published without a version: request log records (fenced by
// the epoch) and notifications, resumed after a crash like a version. At low load every batch becomes a
// version; at high load many batches coalesce into one. Publishing an outbox
// row uploads the snapshot, verifies it in a separate read-only DuckDB
// instance, exports changed tables to content-addressed Parquet, uploads the
// manifest, records the version in Postgres (fenced by the lease epoch),
// notifies every request in it and marks the row published. Every step is
// idempotent, so a crash anywhere resumes the publication at the next start.
//
// # Lease
//
// The writer lease (package queue) is acquired before the DuckDB file is
// opened; its epoch is claimed in Postgres, and every Postgres write carries
// it. A db-manager that cannot renew its lease stops before its next commit
// and exits.
//
// # Disaster recovery
//
// When the DuckDB file is missing (a lost volume) and a version was
// published, the db-manager downloads the latest snapshot, verifies its
// sha256 and resumes from the position recorded in it: the request log is
// replayed from there. The snapshot carries no request ids; retries of
// requests it holds are recognised through Postgres' request log.
package dbmanager
