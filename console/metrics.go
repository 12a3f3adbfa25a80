package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the dispatcher's per-model gauges on meter,
// observed at every collection (a Prometheus scrape, an OTLP export) from
// the same sources as the models page:
//
//	teatree.requests.pending  requests not yet acknowledged by the model's db-manager (consumer dbm-<model>)
//	teatree.lease.epoch       the model's writer epoch (goal_model.writer_epoch)
//	teatree.publication.lag   seconds since the oldest request still queued was submitted (0: none)
//	teatree.version.current   the model's current version
//
// Every gauge has the attribute model.
func (c *Console) RegisterMetrics(meter metric.Meter) error {
	pending, err1 := meter.Int64ObservableGauge("teatree.requests.pending", metric.WithDescription("requests not yet acknowledged by the model's db-manager"))
	epoch, err2 := meter.Int64ObservableGauge("teatree.lease.epoch", metric.WithDescription("writer lease epoch of the model"))
	lag, err3 := meter.Float64ObservableGauge("teatree.publication.lag", metric.WithUnit("s"), metric.WithDescription("age of the oldest request still queued"))
	current, err4 := meter.Int64ObservableGauge("teatree.version.current", metric.WithDescription("current version of the model"))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("console: metrics: %w", err)
	}
	_, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ms, err := c.ctl.ListModels(ctx)
		if err != nil {
			return err
		}
		act, err := c.ctl.Activity(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, m := range ms {
			attrs := metric.WithAttributes(attribute.String("model", m.ID))
			o.ObserveInt64(epoch, m.WriterEpoch, attrs)
			o.ObserveInt64(current, m.CurrentVersion, attrs)
			var age float64
			if t := act[m.ID].OldestQueued; !t.IsZero() {
				age = now.Sub(t).Seconds()
			}
			o.ObserveFloat64(lag, age, attrs)
			n, err := c.pending(ctx, m.ID)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				n, err = 0, nil
			}
			if err != nil {
				return err
			}
			o.ObserveInt64(pending, n, attrs)
		}
		return nil
	}, pending, epoch, lag, current)
	if err != nil {
		return fmt.Errorf("console: metrics: %w", err)
	}
	return nil
}
