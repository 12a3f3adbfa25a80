package dbmanager

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// derivedStep keeps the model's derived tables (functions.Derived) current
// inside one transaction of applyRange:
//
//   - beginDerived, right after BEGIN, loads the definitions and marks the
//     inputs maintained incrementally (their last rowid);
//   - afterRequest refuses a request that writes a derived table, reloads
//     the definitions after derive and drop_table, and in stepwise mode
//     refreshes right after the request (full recomputes only);
//   - afterBatch refreshes, once, every derived table whose inputs the
//     applied requests changed, in dependency order, before the
//     bookkeeping and the commit: the version cut from this commit has
//     current outputs.
//
// A refresh that fails for the data's or the definition's fault (model.
// ErrInvalid, judge's failed) fails a request, with the batch rule: the
// range is applied again stepwise, and the first request after which the
// refresh fails is failed with the refresh's error; the range before it
// commits. Any other error is the batch's (retry or fatal).
type derivedStep struct {
	d         *functions.Derived
	none      *bool              // Manager.noDerived
	refreshed []functions.Result // what the refreshes changed, for record
}

// beginDerived loads the derived tables in the open transaction, unless
// the model is known to have none.
func (m *Manager) beginDerived(ctx context.Context, conn *sql.Conn) (*derivedStep, error) {
	if m.noDerived {
		return &derivedStep{d: &functions.Derived{}, none: &m.noDerived}, nil
	}
	d, err := functions.LoadDerived(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("dbmanager: %w", err)
	}
	m.noDerived = d.Tables() == 0
	return &derivedStep{d: d, none: &m.noDerived}, nil
}

// afterRequest runs after a request applied with res.
func (s *derivedStep) afterRequest(ctx context.Context, conn *sql.Conn, function string, res functions.Result, stepwise bool) error {
	if err := s.d.CheckWrite(function, res); err != nil {
		return err
	}
	if function == "derive" || function == "drop_table" {
		if err := s.d.Reload(ctx, conn); err != nil {
			return err
		}
		*s.none = false // loaded again at the next transaction
	}
	if !stepwise || s.d.Tables() == 0 {
		return nil
	}
	out, err := s.d.Maintain(ctx, conn, []functions.Result{res}, false)
	if err != nil {
		return err
	}
	s.refreshed = append(s.refreshed, out...)
	return nil
}

// afterBatch refreshes the derived tables the applied items changed.
func (s *derivedStep) afterBatch(ctx context.Context, conn *sql.Conn, items []*item) error {
	if s.d.Tables() == 0 {
		return nil
	}
	var changes []functions.Result
	for _, it := range items {
		if !it.skip && it.status == model.StatusApplied {
			changes = append(changes, it.result)
		}
	}
	out, err := s.d.Maintain(ctx, conn, changes, true)
	if err != nil {
		return err
	}
	s.refreshed = append(s.refreshed, out...)
	return nil
}
