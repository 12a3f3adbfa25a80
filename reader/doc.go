// Package reader is teatree's read-only query service and its client.
//
// A Server keeps the latest version of each model it is asked about open
// read-only in DuckDB (one instance per version, Config.Threads and
// Config.MemoryLimit, external access off), under Config.Dir. A version is
// built from the block store with snapshot.Fetch, reusing the blocks of the
// version the reader already holds (what teactl pull does), verified
// against the content index (snapshot.Verify). A query without a version
// runs on the latest version Postgres records when it starts (opened first
// if need be); the reader follows the models' applied notifications
// (teatree.notify.*, and a poll every 30 s) to open each newer version
// beside the served one before it is asked for. A query holds a reference to the version it started on and
// finishes there; the retired version is closed and its file removed when
// its last query ends ("one version forward"). A version no query used for
// Config.IdleTimeout (default 10 min) is closed.
//
// It serves as NATS micro service ServiceName ("teatree-reader"; $SRV.PING,
// $SRV.INFO and $SRV.STATS come with it) with endpoint "query" on subject
// teatree.query.* in queue group QueueGroup: several readers may run and
// each request is answered by one. Endpoint "group" on teatree.group.*
// answers a query over a model group: the union of its members' latest
// versions, attached read-only in one in-memory DuckDB with a view per
// table (Server.serveGroup); its pages carry HeaderGroup and
// HeaderMembers, and HeaderFailed for a partial one. QueryGroup is its
// client. QueryFanOut spreads a group query over every reader instead:
// one partial query per member on the model endpoint, merged by the
// caller (see fanout.go for what merges). Endpoint "info" (package internal/svcinfo, teactl info) reports
// the open models and versions, the queries in flight, memory and the last
// failed query.
//
// # Protocol
//
// The client subscribes to an inbox and publishes a Request (JSON: sql, one
// SELECT checked by functions.ValidateSelect; optional version, lower
// limits, render) to teatree.query.<model> with that inbox as reply
// subject. The reader answers on the inbox with pages: the body of each is
// whole Arrow IPC messages, and their concatenation is one Arrow IPC stream
// (schema, record batches, end of stream). Headers:
//
//	Teatree-Model, Teatree-Version   what the whole result comes from
//	Teatree-Page, Teatree-Rows       1, 2, …; rows in the page
//	Teatree-Next                     subject for "next" / "cancel" (not on the last page)
//	Teatree-Last: true               the last page
//
// A page holds at most Config.PageBytes of IPC (default 768 KiB). The
// reader sends page 1 at once and each later page only when "next"
// arrives on Teatree-Next (it builds that page meanwhile); "cancel", or no
// "next" within Config.ClientTimeout (30 s), cancels the DuckDB query and
// releases the version. An error, before or between pages, is a message
// with micro's Nats-Service-Error and Nats-Service-Error-Code headers
// (CodeInvalid, CodeNotFound, CodeTimeout, CodeTooLarge, …).
//
// Limits per query (Config; a request may lower them): MaxRows (10 M),
// MaxBytes (1 GiB of IPC), MaxTime (5 min from the request to the last
// page); exceeding one is an ErrLimit error naming the limit.
//
// Query is the client: it returns a Result that reads the pages as Arrow
// record batches, asking for each next page as the previous one starts
// being read, and cancels the query when closed early. QueryStream is the
// same with the result's Arrow IPC stream unread, the pages' bytes as
// they come (teactl query --format arrow passes them through).
//
// duckdb-go's Arrow interface needs the duckdb_arrow build tag; without it
// Run returns ErrNoArrow (the client works either way).
package reader
