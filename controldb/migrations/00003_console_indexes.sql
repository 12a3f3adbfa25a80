-- Indexes for the read-only console and the dispatcher's gauges
-- (controldb/console.go): the oldest queued request and the last error of
-- each model, and the requests of a version, without scanning the whole
-- request log (7 days of requests by default).

-- +goose Up
CREATE INDEX request_log_queued ON request_log (model, submitted_at) WHERE status = 'queued';
CREATE INDEX request_log_errors ON request_log (model, (coalesce(finished_at, submitted_at)) DESC) WHERE status IN ('failed', 'rejected');
CREATE INDEX request_log_model_version ON request_log (model, version) WHERE version IS NOT NULL;

-- +goose Down
DROP INDEX request_log_model_version;
DROP INDEX request_log_errors;
DROP INDEX request_log_queued;
