// Package queue is teatree's adapter for NATS JetStream: the request stream
// TEATREE_REQUESTS (the durable, replayable request log), the notification
// stream TEATREE_NOTIFY, the consumers that read them, and the writer leases
// in the KV bucket teatree-writers, and the request cancels in the KV bucket
// teatree-cancels (cancel.go).
//
// Streams are created or updated idempotently by EnsureStreams. The request
// stream keeps Limits retention with a max age (default 7 days) and a dedupe
// window (default 10 minutes), so a client retry that reuses its request id
// (header Nats-Msg-Id) is stored once. It is a log, not a work queue: the
// db-manager of model M reads it through its durable pull consumer dbm-M,
// which it recreates at start from the stream sequence recorded in the
// model's own DuckDB file, so the file, not the consumer, is the source of
// truth for what was applied (see package dbmanager). The notification
// stream allows atomic batch publishes (allow_atomic, ADR-50): package
// notify publishes a version's notifications as one batch. EnsureStreams
// switches it on when it updates a stream made by an older release.
package queue
