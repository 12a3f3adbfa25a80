// Package bench measures teatree side by side with the raw engines it is
// built on, in one run on one machine: `make bench` (or `teabench`).
//
// It starts its own stack the way `teactl dev` does: an in-process NATS
// server with JetStream (file storage, sync_interval always), a private
// Postgres from the local binaries, a directory object store and the
// dispatcher, which starts one db-manager child process per model (the
// teabench executable itself re-executed as `teabench dbmanager`, as teactl
// dev does with its own executable). Then it runs the scenarios of issue 7,
// each after a warm-up and repeated (-runs, at least 3), and reports the
// median and the spread of every figure together with a baseline measured
// in the same run on the raw engine:
//
//  1. small requests: one-row appends submitted asynchronously by 4
//     clients to one model and to 20 models, first submit to last applied
//     notification, vs publishing messages of the same size to a JetStream
//     stream with the same storage and sync settings and consuming them with
//     a pull consumer; plus the submit→notification latency at half the
//     measured maximum rate;
//  2. bulk ingest: flights-3m.parquet through `teactl append --wait` vs
//     DuckDB alone (CREATE TABLE AS, COPY TO Parquet, copy of the file),
//     with the db-manager's peak RSS and a run with a 256 MiB memory_limit;
//     2p (the same ingest with column profiles on and off,
//     TEATREE_PROFILES=off) and 2g (an append from a Postgres source of
//     -source-rows rows in the bench's own Postgres vs psql copying the same
//     rows out with COPY … TO STDOUT into a file), both in the default set
//     since session 17; 2a alone is not;
//  3. a small change to the large model: one single-row append, submit to
//     applied, vs re-exporting the whole table and copying the whole file,
//     with the bytes its version uploaded; and (3b) the same append to a
//     10-row model, whose ratio shows whether the cost depends on the
//     table's size; and 3L (not in the default set: make bench-large) a
//     synthetic model of about 2 GB built once with the sql function over
//     range(): one-row appends (time and uploaded bytes), `teactl pull
//     --json` of each new version over the previous one (fetched bytes),
//     and an update of 1 % of the rows, vs DuckDB alone running the same
//     statement and a CHECKPOINT on a copy of the file;
//  4. queries through `teactl query` on a cached snapshot vs DuckDB on the
//     same file in this process, with teactl's fixed start-up cost (a
//     `SELECT 1`) reported separately;
//  5. many models: N models with 20 requests each: total time, the peak
//     number of db-manager processes, and how long until the idle ones
//     were stopped.
//
// Nothing here asserts a speed: the figures go to a table on stdout and to
// one JSON document (-json FILE); docs/performance.md explains them.
package bench
