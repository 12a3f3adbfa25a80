-- Model groups (issue 15 item 4): a model may belong to one group, named
-- like a model id (a DNS label); a query over the group runs on the union
-- of its members' latest versions (reader, teatree.group.<group>).

-- +goose Up
ALTER TABLE goal_model ADD COLUMN model_group text
    CHECK (model_group ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$');
CREATE INDEX goal_model_group ON goal_model (model_group) WHERE model_group IS NOT NULL;

-- +goose Down
DROP INDEX goal_model_group;
ALTER TABLE goal_model DROP COLUMN model_group;
