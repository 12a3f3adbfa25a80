package controldb

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Module is one registration of a WebAssembly module (table wasm_module).
type Module struct {
	Model      string    `json:"model"`
	Name       string    `json:"name"`
	Digest     string    `json:"digest"` // sha256 of the module's bytes, hex
	Registered time.Time `json:"registered"`
	Exports    []string  `json:"exports"` // exported function names, sorted
}

// RecordModule records the registration of m (m.Registered is set by
// Postgres). Registering the same digest under the same name again only
// moves Registered forward.
func (db *DB) RecordModule(ctx context.Context, m Module) error {
	if m.Exports == nil {
		m.Exports = []string{}
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO wasm_module (model, name, digest, exports) VALUES ($1, $2, $3, $4)
ON CONFLICT (model, name, digest) DO UPDATE SET registered = now(), exports = EXCLUDED.exports`, m.Model, m.Name, m.Digest, m.Exports)
	if err != nil {
		return fmt.Errorf("controldb: record module %s of model %s: %w", m.Name, m.Model, err)
	}
	return nil
}

// ListModules returns the registrations of model m's modules, by name,
// latest first.
func (db *DB) ListModules(ctx context.Context, m string) ([]Module, error) {
	rows, err := db.pool.Query(ctx, `SELECT model, name, digest, registered, exports FROM wasm_module WHERE model = $1 ORDER BY name, registered DESC, digest`, m)
	if err != nil {
		return nil, fmt.Errorf("controldb: list modules of model %s: %w", m, err)
	}
	defer rows.Close()
	var out []Module
	for rows.Next() {
		var r Module
		if err := rows.Scan(&r.Model, &r.Name, &r.Digest, &r.Registered, &r.Exports); err != nil {
			return nil, fmt.Errorf("controldb: list modules of model %s: %w", m, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("controldb: list modules of model %s: %w", m, err)
	}
	return out, nil
}

// LiveModules returns the digests of the modules of block namespace m (a
// model and its forks, which share its modules) that garbage collection
// keeps: the one each name of each of those models points at (its latest
// registration; all of them when registrations tie) and those the lineage
// of an unexpired version of one of them, or of one expired less than
// grace ago (Postgres's clock), lists.
func (db *DB) LiveModules(ctx context.Context, m string, grace time.Duration) (map[string]bool, error) {
	rows, err := db.pool.Query(ctx, `WITH ns AS (SELECT id FROM goal_model WHERE coalesce(namespace, id) = $1)
	SELECT digest FROM wasm_module w WHERE model IN (SELECT id FROM ns)
		AND registered = (SELECT max(registered) FROM wasm_module WHERE model = w.model AND name = w.name)
	UNION
	SELECT jsonb_array_elements_text(lineage->'modules') FROM model_version WHERE model IN (SELECT id FROM ns)
		AND jsonb_typeof(lineage->'modules') = 'array'
		AND (expired_at IS NULL OR expired_at > now() - $2::bigint * interval '1 microsecond')`, m, grace.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("controldb: live modules of %q: %w", m, err)
	}
	digests, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("controldb: live modules of %q: %w", m, err)
	}
	live := make(map[string]bool, len(digests))
	for _, d := range digests {
		live[d] = true
	}
	return live, nil
}
