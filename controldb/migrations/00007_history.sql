-- History you can work with (issue 17). A request cancelled with teactl
-- cancel before its db-manager applied it ends with status 'cancelled'.

-- +goose Up
ALTER TABLE request_log DROP CONSTRAINT request_log_status_check;
ALTER TABLE request_log ADD CONSTRAINT request_log_status_check
    CHECK (status IN ('queued', 'applied', 'failed', 'rejected', 'cancelled'));

-- +goose Down
UPDATE request_log SET status = 'failed', error = 'cancelled' WHERE status = 'cancelled';
ALTER TABLE request_log DROP CONSTRAINT request_log_status_check;
ALTER TABLE request_log ADD CONSTRAINT request_log_status_check
    CHECK (status IN ('queued', 'applied', 'failed', 'rejected'));
