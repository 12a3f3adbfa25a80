-- WebAssembly modules (issue 18): every registration of a module under a
-- name of a model, through register_module. The module's bytes are in the
-- object store at modules/<model>/<digest>.wasm (content-addressed: the
-- digest is the sha256 of the bytes, hex). A name registered again with
-- other bytes gets a second row; the latest registration is the name's
-- module (the binding the db-manager uses lives in the model's database).

-- +goose Up
CREATE TABLE wasm_module (
    model      text        NOT NULL REFERENCES goal_model (id) ON DELETE CASCADE,
    name       text        NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$'),
    digest     text        NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    registered timestamptz NOT NULL DEFAULT now(),
    exports    text[]      NOT NULL,
    PRIMARY KEY (model, name, digest)
);

-- +goose Down
DROP TABLE wasm_module;
