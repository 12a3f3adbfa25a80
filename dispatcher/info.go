package dispatcher

import (
	"context"

	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/queue"
)

// addService registers the dispatcher as the micro service
// svcinfo.Dispatcher (metadata: role=leader, since Run runs only in the
// leader) with its info endpoint; the caller stops it.
func (d *Dispatcher) addService() (micro.Service, error) {
	return svcinfo.Add(d.js.Conn(), svcinfo.Dispatcher, "teatree dispatcher: validates requests and runs db-managers",
		map[string]string{"role": "leader"}, d.info)
}

// info reports the models whose db-manager runs (omitted when the runner
// does not answer within ctx), the position (ack floor, a stream
// sequence) and lag (num_pending) of the dispatcher's consumer, and the
// last error of a retried or failed step.
func (d *Dispatcher) info(ctx context.Context) svcinfo.Info {
	in := svcinfo.Info{LastError: d.errs.Last()}
	if ms, err := d.runner.Running(ctx); err == nil {
		in.Models = ms
	}
	if c, err := d.js.Consumer(ctx, queue.RequestStream, queue.DispatcherName); err == nil {
		if ci, err := c.Info(ctx); err == nil {
			in.Position, in.Lag = ci.AckFloor.Stream, &ci.NumPending
		}
	}
	return in
}
