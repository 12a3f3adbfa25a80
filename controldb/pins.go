package controldb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/teatree/teatree/model"
)

// Pin is one row of version_pin: version Version of model Model is kept
// past retention under Name.
type Pin struct {
	Model   string `json:"model"`
	Name    string `json:"name"`
	Version int64  `json:"version"`
}

var pinNamePattern = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidatePinName reports whether name can name a pin: a DNS label that
// starts with a letter (a name of digits would read as a version number
// in MODEL@NAME). The error wraps model.ErrInvalid.
func ValidatePinName(name string) error {
	if !pinNamePattern.MatchString(name) {
		return fmt.Errorf("%w: pin name %s: use lower-case letters, digits and '-', starting with a letter, at most 63 characters", model.ErrInvalid, model.Quote(name))
	}
	return nil
}

// PinVersion pins version n of model m under name (empty: the version's
// number, so MODEL@N keeps meaning version N). A name already pinning
// another version is moved to n; pinning again is harmless.
//
// Errors: model.ErrInvalid for a bad name; model.ErrNotFound when the
// version is not published or expired already (its objects may be gone).
func (db *DB) PinVersion(ctx context.Context, m string, n int64, name string) (Pin, error) {
	if name == "" {
		name = strconv.FormatInt(n, 10)
	} else if err := ValidatePinName(name); err != nil {
		return Pin{}, err
	}
	p := Pin{Model: m, Name: name, Version: n}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var expired bool
		err := tx.QueryRow(ctx, `SELECT expired_at IS NOT NULL FROM model_version WHERE model = $1 AND version = $2 FOR SHARE`, m, n).Scan(&expired)
		if errors.Is(err, pgx.ErrNoRows) || expired {
			return fmt.Errorf("%w: model %q has no version %d to pin (never published, or expired by retention; `teactl versions %s` lists those kept)", model.ErrNotFound, m, n, m)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO version_pin (model, name, version) VALUES ($1, $2, $3)
			ON CONFLICT (model, name) DO UPDATE SET version = excluded.version, created_at = now()`, m, name, n)
		return err
	})
	if err != nil {
		if errors.Is(err, model.ErrNotFound) {
			return Pin{}, err
		}
		return Pin{}, fmt.Errorf("controldb: pin %s version %d: %w", m, n, err)
	}
	return p, nil
}

// Unpin removes the pin name of model m (a version number for an unnamed
// pin) and returns it; retention expires the version again when it is
// older than the model's retention. Errors: model.ErrNotFound when m has
// no such pin.
func (db *DB) Unpin(ctx context.Context, m, name string) (Pin, error) {
	p := Pin{Model: m, Name: name}
	err := db.pool.QueryRow(ctx, `DELETE FROM version_pin WHERE model = $1 AND name = $2 RETURNING version`, m, name).Scan(&p.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("%w: model %q has no pin %q (`teactl versions %s` shows the pins)", model.ErrNotFound, m, name, m)
	}
	if err != nil {
		return p, fmt.Errorf("controldb: unpin %s %s: %w", m, name, err)
	}
	return p, nil
}

// ResolvePin returns the version pinned under name in model m.
// Errors: model.ErrNotFound when m has no such pin.
func (db *DB) ResolvePin(ctx context.Context, m, name string) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT version FROM version_pin WHERE model = $1 AND name = $2`, m, name).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: model %q has no pin %q (`teactl versions %s` shows the pins)", model.ErrNotFound, m, name, m)
	}
	if err != nil {
		return 0, fmt.Errorf("controldb: pin %s %s: %w", m, name, err)
	}
	return n, nil
}
