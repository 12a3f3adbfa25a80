-- Parquet data files (issue 14). A table of a version is the union of its
-- data files: one row per file, ordinal ord within the table. A file is a
-- content-addressed object models/<model>/tables/<table>/<sha256>.parquet
-- shared by the versions that list it. content_index keeps one row per
-- table: for versions from this migration on, parquet_uri is empty, sha256
-- is the digest of the table's file list (snapshot.FilesDigest) and bytes
-- the sum of its files' bytes. Versions published before it are backfilled
-- with their one Parquet file.

-- +goose Up
CREATE TABLE data_file (
    model      text   NOT NULL,
    version    bigint NOT NULL,
    table_name text   NOT NULL,
    ord        integer NOT NULL CHECK (ord >= 0),
    key        text   NOT NULL,
    sha256     text   NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    rows       bigint NOT NULL CHECK (rows >= 0),
    bytes      bigint NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (model, version, table_name, ord),
    FOREIGN KEY (model, version, table_name) REFERENCES content_index (model, version, table_name)
);
CREATE INDEX data_file_key ON data_file (model, key);
INSERT INTO data_file (model, version, table_name, ord, key, sha256, rows, bytes)
    SELECT model, version, table_name, 0, parquet_uri, sha256, rows, bytes FROM content_index WHERE parquet_uri <> '';

-- +goose Down
DROP TABLE data_file;
