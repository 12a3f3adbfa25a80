package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/model"
)

// Pin keeps version n of model m past retention under name (empty: the
// version's number). Errors: model.ErrInvalid for a bad model id or name;
// model.ErrNotFound for a version not published or expired already;
// ErrUnreachable when Postgres fails.
func (c *Client) Pin(ctx context.Context, m string, n int64, name string) (controldb.Pin, error) {
	if err := model.ValidateID(m); err != nil {
		return controldb.Pin{}, err
	}
	if n < 1 {
		return controldb.Pin{}, fmt.Errorf("%w: pin %s: version %d: give a published version number", model.ErrInvalid, m, n)
	}
	ctl, err := c.ctl()
	if err != nil {
		return controldb.Pin{}, err
	}
	p, err := ctl.PinVersion(ctx, m, n, name)
	if err != nil && !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrNotFound) {
		return p, unreachable(err)
	}
	return p, err
}

// Unpin removes pin name of model m (for an unnamed pin, the version's
// number). Errors: model.ErrNotFound for no such pin; ErrUnreachable when
// Postgres fails.
func (c *Client) Unpin(ctx context.Context, m, name string) (controldb.Pin, error) {
	if err := model.ValidateID(m); err != nil {
		return controldb.Pin{}, err
	}
	ctl, err := c.ctl()
	if err != nil {
		return controldb.Pin{}, err
	}
	p, err := ctl.Unpin(ctx, m, name)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return p, unreachable(err)
	}
	return p, err
}

// Resolve reads "MODEL", "MODEL@N" or "MODEL@NAME" (a pin, teactl pin) and
// returns the model and version number: 0 (the latest) for a plain MODEL.
// A pin name is looked up in Postgres here, so that every reader of a
// version (Pull, Query, a reader service) is given a number.
//
// Errors: model.ErrInvalid for a bad model id, version or pin name;
// model.ErrNotFound for no such pin; ErrUnreachable when Postgres fails.
func (c *Client) Resolve(ctx context.Context, spec string) (string, int64, error) {
	m, at, ok := strings.Cut(spec, "@")
	if err := model.ValidateID(m); err != nil {
		return "", 0, err
	}
	if !ok {
		return m, 0, nil
	}
	if at != "" && at[0] >= '0' && at[0] <= '9' {
		n, err := strconv.ParseInt(at, 10, 64)
		if err != nil || n < 1 {
			return "", 0, fmt.Errorf("%w: %q: MODEL@N takes a positive version number N", model.ErrInvalid, spec)
		}
		return m, n, nil
	}
	if err := controldb.ValidatePinName(at); err != nil {
		return "", 0, fmt.Errorf("%q: %w", spec, err)
	}
	ctl, err := c.ctl()
	if err != nil {
		return "", 0, err
	}
	n, err := ctl.ResolvePin(ctx, m, at)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return "", 0, unreachable(err)
	}
	return m, n, err
}
