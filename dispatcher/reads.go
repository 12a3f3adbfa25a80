package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// pinReads authorises and pins the reads of request req (args.reads,
// checked by functions.ValidateRequest): each read model must exist and
// list req.Model among its readers, and its version be published and
// kept; a read without a version gets the model's latest version now.
// The pins go into the request log with the request (recorded once), so
// the db-manager, and any replay, read those versions. A refusal wraps
// model.ErrInvalid; other errors are Postgres' (retried).
func (d *Dispatcher) pinReads(ctx context.Context, req model.Request) (map[string]model.ModelVersion, error) {
	reads := functions.ReadsOf(req.Args)
	if len(reads) == 0 {
		return nil, nil
	}
	pins := make(map[string]model.ModelVersion, len(reads))
	for _, alias := range slices.Sorted(maps.Keys(reads)) {
		r := reads[alias]
		other, err := d.ctl.GetModel(ctx, r.Model)
		if errors.Is(err, model.ErrNotFound) {
			return nil, fmt.Errorf("%w: reads.%s: model %s does not exist", model.ErrInvalid, alias, r.Model)
		}
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		if !slices.Contains(other.Readers, req.Model) {
			return nil, fmt.Errorf("%w: reads.%s: model %s does not let model %s read it: its operator grants that with 'teactl model readers %s %s'", model.ErrInvalid, alias, r.Model, req.Model, r.Model, req.Model)
		}
		v, err := d.ctl.GetVersion(ctx, r.Model, r.Version)
		if errors.Is(err, model.ErrNotFound) && r.Version == 0 {
			return nil, fmt.Errorf("%w: reads.%s: model %s has no published version yet", model.ErrInvalid, alias, r.Model)
		}
		if errors.Is(err, model.ErrNotFound) {
			return nil, fmt.Errorf("%w: reads.%s: model %s has no version %d (never published, or expired by retention: 'teactl versions %s' lists those kept)", model.ErrInvalid, alias, r.Model, r.Version, r.Model)
		}
		if err != nil {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		pins[alias] = model.ModelVersion{Model: r.Model, Version: v.Version, Root: v.SHA256}
	}
	return pins, nil
}
