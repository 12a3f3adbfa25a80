-- History you can work with (issue 17).
--
-- A request cancelled with teactl cancel before its db-manager applied it
-- ends with status 'cancelled'.
--
-- lineage is where a version came from (model.Lineage, JSON: parent
-- version, the requests of its stream range with function, args digest and
-- outcome, the teatree build and DuckDB versions, module digests, versions
-- of other models read); NULL for versions published before.
--
-- version_pin names versions that retention must keep (teactl pin): one row
-- per (model, name); an unnamed pin is named by the version's number. A
-- pinned version is never expired, so its blocks and data files are live.

-- +goose Up
ALTER TABLE request_log DROP CONSTRAINT request_log_status_check;
ALTER TABLE request_log ADD CONSTRAINT request_log_status_check
    CHECK (status IN ('queued', 'applied', 'failed', 'rejected', 'cancelled'));

ALTER TABLE model_version ADD COLUMN lineage jsonb;

CREATE TABLE version_pin (
    model      text        NOT NULL,
    name       text        NOT NULL CHECK (name ~ '^([a-z]([-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,18})$'),
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, name),
    FOREIGN KEY (model, version) REFERENCES model_version (model, version)
);
CREATE INDEX version_pin_version ON version_pin (model, version);

-- +goose Down
DROP TABLE version_pin;
ALTER TABLE model_version DROP COLUMN lineage;
UPDATE request_log SET status = 'failed', error = 'cancelled' WHERE status = 'cancelled';
ALTER TABLE request_log DROP CONSTRAINT request_log_status_check;
ALTER TABLE request_log ADD CONSTRAINT request_log_status_check
    CHECK (status IN ('queued', 'applied', 'failed', 'rejected'));
