-- settled_seq: the last stream sequence of the model whose requests are all
-- published, in a version or (when none of them changed anything: failed and
-- rejected requests only) in the request log alone. The dispatcher compares
-- it with the newest request to tell whether a model has pending work.

-- +goose Up
ALTER TABLE goal_model ADD COLUMN settled_seq bigint NOT NULL DEFAULT 0;
UPDATE goal_model g SET settled_seq = coalesce((SELECT max(last_seq) FROM model_version v WHERE v.model = g.id), 0);

-- +goose Down
ALTER TABLE goal_model DROP COLUMN settled_seq;
