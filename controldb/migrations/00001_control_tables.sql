-- The control tables of teatree (see ../../docs/decisions.md and DESIGN.md).
-- Every model has one row in goal_model; every published version one row in
-- model_version and one row per table in content_index; every request that
-- reached the dispatcher one row in request_log.

-- +goose Up
CREATE TABLE goal_model (
    id              text        PRIMARY KEY CHECK (id ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'),
    size_class      text        NOT NULL DEFAULT 'small'
                                CHECK (size_class IN ('small', 'medium', 'large', 'xlarge')),
    -- The writer lease epoch of the newest db-manager (NATS KV revision);
    -- writes carrying an older epoch are refused.
    writer_epoch    bigint      NOT NULL DEFAULT 0,
    current_version bigint      NOT NULL DEFAULT 0,
    retention       integer     NOT NULL DEFAULT 10 CHECK (retention >= 1),
    allow_sql       boolean     NOT NULL DEFAULT false,
    -- First sequence of TEATREE_REQUESTS the model owns; requests published
    -- before the model was created are rejected.
    start_seq       bigint      NOT NULL DEFAULT 1 CHECK (start_seq >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_version (
    model         text        NOT NULL REFERENCES goal_model (id),
    version       bigint      NOT NULL CHECK (version >= 1),
    snapshot_uri  text        NOT NULL,
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    manifest_uri  text        NOT NULL,
    bytes         bigint      NOT NULL CHECK (bytes >= 0),
    first_seq     bigint      NOT NULL,
    last_seq      bigint      NOT NULL CHECK (last_seq >= first_seq),
    request_count integer     NOT NULL CHECK (request_count >= 0),
    epoch         bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    expired_at    timestamptz,
    PRIMARY KEY (model, version)
);

CREATE TABLE content_index (
    model       text   NOT NULL,
    version     bigint NOT NULL,
    table_name  text   NOT NULL,
    parquet_uri text   NOT NULL,
    sha256      text   NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    rows        bigint NOT NULL CHECK (rows >= 0),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    schema      jsonb  NOT NULL,
    PRIMARY KEY (model, version, table_name),
    FOREIGN KEY (model, version) REFERENCES model_version (model, version)
);
CREATE INDEX content_index_parquet ON content_index (model, parquet_uri);

CREATE TABLE request_log (
    request_id   text        PRIMARY KEY,
    model        text        NOT NULL,
    function     text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('queued', 'applied', 'failed', 'rejected')),
    version      bigint,
    error        text        NOT NULL DEFAULT '',
    stream_seq   bigint      NOT NULL,
    submitted_at timestamptz NOT NULL,
    finished_at  timestamptz
);
CREATE INDEX request_log_model_seq ON request_log (model, stream_seq);

-- +goose Down
DROP TABLE request_log;
DROP TABLE content_index;
DROP TABLE model_version;
DROP TABLE goal_model;
