-- Reads across models (issue 17 item 2).
--
-- goal_model.readers are the models whose requests may read this model's
-- published versions (args.reads of a refresh; teactl model readers):
-- empty, the default, lets no other model read it.
--
-- request_log.reads are the versions a request reads, pinned by the
-- dispatcher when it accepts the request (JSON: alias -> {model, version,
-- root}); NULL for a request without reads. Set once: a replay of the
-- request reads the same versions.

-- +goose Up
ALTER TABLE goal_model ADD COLUMN readers text[] NOT NULL DEFAULT '{}';
ALTER TABLE request_log ADD COLUMN reads jsonb;

-- +goose Down
ALTER TABLE request_log DROP COLUMN reads;
ALTER TABLE goal_model DROP COLUMN readers;
