-- Block snapshots (issue 12). snapshot_format says what snapshot_uri names:
-- 'file' is a whole DuckDB file whose sha256 is the file's; 'blocks' is a
-- block map (JSON, package blocks) whose sha256 is the map's root digest,
-- the blocks being the objects models/<model>/blocks/<sha256>.
-- uploaded_bytes is what publishing the version put in the object store
-- (blocks and Parquet; 0 for versions before this migration); compaction
-- marks a version cut from a compact copy of the live file.

-- +goose Up
ALTER TABLE model_version ADD COLUMN snapshot_format text NOT NULL DEFAULT 'file' CHECK (snapshot_format IN ('file', 'blocks'));
ALTER TABLE model_version ADD COLUMN uploaded_bytes bigint NOT NULL DEFAULT 0 CHECK (uploaded_bytes >= 0);
ALTER TABLE model_version ADD COLUMN compaction boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE model_version DROP COLUMN compaction;
ALTER TABLE model_version DROP COLUMN uploaded_bytes;
ALTER TABLE model_version DROP COLUMN snapshot_format;
