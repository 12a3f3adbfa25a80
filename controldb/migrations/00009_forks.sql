-- Forks (issue 17 item 3). A model's block namespace is the model whose
-- object-store prefix holds its snapshot blocks, Parquet data files and
-- WASM modules (models/<namespace>/blocks/..., models/<namespace>/tables/...,
-- modules/<namespace>/...): NULL for a model's own id. A fork (teactl model
-- fork SRC DST) shares the namespace of its source, so nothing is copied;
-- retention of a namespace keeps what any version of any of its models
-- lists. forked_from and forked_version say which version a fork started
-- from (its version 1 lists that version's blocks and data files).

-- +goose Up
ALTER TABLE goal_model ADD COLUMN namespace text REFERENCES goal_model (id);
ALTER TABLE goal_model ADD COLUMN forked_from text;
ALTER TABLE goal_model ADD COLUMN forked_version bigint;
ALTER TABLE goal_model ADD CONSTRAINT goal_model_fork_check
    CHECK ((forked_from IS NULL) = (forked_version IS NULL) AND (forked_from IS NULL OR namespace IS NOT NULL));
ALTER TABLE goal_model ADD CONSTRAINT goal_model_fork_source
    FOREIGN KEY (forked_from, forked_version) REFERENCES model_version (model, version);
CREATE INDEX goal_model_namespace ON goal_model (namespace) WHERE namespace IS NOT NULL;

-- +goose Down
DROP INDEX goal_model_namespace;
ALTER TABLE goal_model DROP CONSTRAINT goal_model_fork_source;
ALTER TABLE goal_model DROP CONSTRAINT goal_model_fork_check;
ALTER TABLE goal_model DROP COLUMN forked_version;
ALTER TABLE goal_model DROP COLUMN forked_from;
ALTER TABLE goal_model DROP COLUMN namespace;
