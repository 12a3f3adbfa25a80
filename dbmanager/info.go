package dbmanager

import (
	"context"

	"github.com/nats-io/nats.go/micro"

	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/queue"
)

// addService registers the db-manager as the micro service
// svcinfo.DBManager (metadata: model) with its info endpoint; the caller
// stops it.
func (m *Manager) addService() (micro.Service, error) {
	return svcinfo.Add(m.js.Conn(), svcinfo.DBManager, "teatree db-manager: the single writer of model "+m.cfg.Model,
		map[string]string{"model": m.cfg.Model}, m.info)
}

// info reports the model, the position (last applied stream sequence),
// the lag (num_pending of the consumer dbm-<model>, omitted when
// JetStream does not answer within ctx), DuckDB's memory (omitted while a
// batch or a cut holds the live file) and the last error: a failed
// request or a retried step.
func (m *Manager) info(ctx context.Context) svcinfo.Info {
	in := svcinfo.Info{Models: []string{m.cfg.Model}, Position: m.position.Load(), LastError: m.errs.Last()}
	if c, err := m.js.Consumer(ctx, queue.RequestStream, queue.ConsumerName(m.cfg.Model)); err == nil {
		if ci, err := c.Info(ctx); err == nil {
			in.Lag = &ci.NumPending
		}
	}
	if m.liveMu.TryLock() {
		defer m.liveMu.Unlock()
		var bytes int64
		if m.db.QueryRowContext(ctx, "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory()").Scan(&bytes) == nil {
			in.Memory.DuckDB = bytes
		}
	}
	return in
}
