package controldb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/teatree/teatree/model"
)

// Fork is what ForkModel needs: model Dst is created as a fork of version
// Version of model Src (0: Src's latest), owning the requests from stream
// sequence StartSeq on (queue.StreamLastSeq + 1, as for CreateModel).
type Fork struct {
	Src      string
	Version  int64
	Dst      string
	StartSeq uint64
}

// ForkModel creates model f.Dst as a fork of f.Src at f.Version, in one
// transaction: it locks the source version's row (FOR SHARE, so
// retention cannot expire it meanwhile: ExpireVersions updates that row),
// inserts the model row of Dst (settings of Src, namespace of Src,
// current version 1), calls write with the source version (its tables
// and data files) inside the transaction, and records the version write
// returns as Dst's version 1, with Src's module registrations. write puts
// Dst's manifest and block map in the object store and returns Dst's
// version; an error from it rolls everything back.
//
// Errors: model.ErrInvalid for a bad id or a source version of a format
// forks cannot share (a whole-file snapshot); model.ErrNotFound when Src
// or its version does not exist or is expired; model.ErrConflict when Dst
// exists already.
func (db *DB) ForkModel(ctx context.Context, f Fork, write func(ctx context.Context, src Version, dst Model) (Version, error)) (Model, error) {
	for _, id := range []string{f.Src, f.Dst} {
		if err := model.ValidateID(id); err != nil {
			return Model{}, err
		}
	}
	if f.Src == f.Dst {
		return Model{}, fmt.Errorf("%w: fork %s to itself: name a new model", model.ErrInvalid, f.Src)
	}
	if f.StartSeq == 0 {
		f.StartSeq = 1
	}
	var out Model
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		src, err := scanModel(tx.QueryRow(ctx, `SELECT `+modelColumns+` FROM goal_model WHERE id = $1`, f.Src))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: cannot fork model %q: it does not exist (`teactl model list` lists the models)", model.ErrNotFound, f.Src)
		}
		if err != nil {
			return err
		}
		v, err := scanVersion(tx.QueryRow(ctx, `SELECT `+versionColumns+` FROM model_version
			WHERE model = $1 AND expired_at IS NULL AND ($2::bigint = 0 OR version = $2::bigint) ORDER BY version DESC LIMIT 1 FOR SHARE`, f.Src, f.Version))
		if errors.Is(err, pgx.ErrNoRows) {
			if f.Version == 0 {
				return fmt.Errorf("%w: cannot fork model %q: it has no published version yet", model.ErrNotFound, f.Src)
			}
			return fmt.Errorf("%w: cannot fork %s@%d: no such version (never published, or expired by retention; `teactl versions %s` lists those kept)", model.ErrNotFound, f.Src, f.Version, f.Src)
		}
		if err != nil {
			return err
		}
		if v.SnapshotFormat != FormatBlocks {
			return fmt.Errorf("%w: cannot fork %s@%d: it is a whole-file snapshot of an older release; fork a version published with block snapshots", model.ErrInvalid, f.Src, v.Version)
		}
		vs := []Version{v}
		if err := fillTables(ctx, tx, f.Src, vs); err != nil {
			return err
		}
		v = vs[0]
		dst, err := scanModel(tx.QueryRow(ctx, `INSERT INTO goal_model (id, size_class, retention, allow_sql, start_seq, settled_seq, current_version, namespace, forked_from, forked_version)
			VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9) RETURNING `+modelColumns,
			f.Dst, src.SizeClass, src.Retention, src.AllowSQL, int64(f.StartSeq), int64(f.StartSeq-1), src.Namespace, f.Src, v.Version))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return fmt.Errorf("%w: cannot fork %s@%d to %s: model %s exists already (a fork creates its model: pick a new name)", model.ErrConflict, f.Src, v.Version, f.Dst, f.Dst)
		}
		if err != nil {
			return err
		}
		nv, err := write(ctx, v, dst)
		if err != nil {
			return err
		}
		nv.Model, nv.Version = f.Dst, 1
		if err := insertVersion(ctx, tx, nv); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO wasm_module (model, name, digest, registered, exports)
			SELECT $2, name, digest, registered, exports FROM wasm_module WHERE model = $1`, f.Src, f.Dst); err != nil {
			return err
		}
		out = dst
		return nil
	})
	if err != nil {
		if errors.Is(err, model.ErrNotFound) || errors.Is(err, model.ErrConflict) || errors.Is(err, model.ErrInvalid) {
			return Model{}, err
		}
		return Model{}, fmt.Errorf("controldb: fork %s@%d to %s: %w", f.Src, f.Version, f.Dst, err)
	}
	return out, nil
}

// NamespaceVersions returns, in one statement (one snapshot of Postgres),
// the versions of every model of block namespace ns that are unexpired or
// expired less than grace ago (Postgres's clock), without their tables:
// the versions whose block maps retention must keep the blocks of. One
// statement matters: a fork committed after it cannot be missed while its
// source version is seen expired (ForkModel locks that version).
func (db *DB) NamespaceVersions(ctx context.Context, ns string, grace time.Duration) ([]Version, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+versionColumns+` FROM model_version
		WHERE model IN (SELECT id FROM goal_model WHERE coalesce(namespace, id) = $1)
			AND (expired_at IS NULL OR expired_at > now() - $2::bigint * interval '1 microsecond')
		ORDER BY model, version`, ns, grace.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("controldb: versions of namespace %q: %w", ns, err)
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Version, error) { return scanVersion(r) })
	if err != nil {
		return nil, fmt.Errorf("controldb: versions of namespace %q: %w", ns, err)
	}
	return vs, nil
}
