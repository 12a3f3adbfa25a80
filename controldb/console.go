package controldb

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Read-only queries of the web console (package console) and of the
// dispatcher's gauges.

// RecentRequests returns the newest limit request records of model m,
// newest (highest stream sequence) first.
func (db *DB) RecentRequests(ctx context.Context, m string, limit int) ([]RequestRecord, error) {
	rows, err := db.pool.Query(ctx, "SELECT "+requestColumns+" FROM request_log WHERE model = $1 ORDER BY stream_seq DESC, submitted_at DESC LIMIT $2", m, limit)
	if err != nil {
		return nil, fmt.Errorf("controldb: recent requests of %q: %w", m, err)
	}
	rs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RequestRecord, error) { return scanRequest(row) })
	if err != nil {
		return nil, fmt.Errorf("controldb: recent requests of %q: %w", m, err)
	}
	return rs, nil
}

// PublicationLatency is how long the requests of one version waited: from
// the submission of its earliest request to the version's creation.
type PublicationLatency struct {
	Version int64
	Created time.Time
	Latency time.Duration
}

// PublicationLatencies returns the publication latency of the newest limit
// versions of model m that have recorded requests, oldest version first.
func (db *DB) PublicationLatencies(ctx context.Context, m string, limit int) ([]PublicationLatency, error) {
	rows, err := db.pool.Query(ctx, `SELECT * FROM (SELECT v.version, v.created_at, extract(epoch FROM v.created_at - min(r.submitted_at))::float8
		FROM model_version v JOIN request_log r ON r.model = v.model AND r.version = v.version
		WHERE v.model = $1 GROUP BY v.version, v.created_at ORDER BY v.version DESC LIMIT $2) newest ORDER BY version`, m, limit)
	if err != nil {
		return nil, fmt.Errorf("controldb: publication latencies of %q: %w", m, err)
	}
	ls, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PublicationLatency, error) {
		var l PublicationLatency
		var secs float64
		err := row.Scan(&l.Version, &l.Created, &secs)
		l.Latency = time.Duration(secs * float64(time.Second))
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("controldb: publication latencies of %q: %w", m, err)
	}
	return ls, nil
}

// ModelActivity is what the request log says of one model at a glance.
type ModelActivity struct {
	OldestQueued time.Time // submission of the oldest queued request; zero if none
	LastError    string    // error of the newest failed or rejected request
	LastErrorAt  time.Time
}

// Activity returns the ModelActivity of every model that has requests, by
// model id.
func (db *DB) Activity(ctx context.Context) (map[string]ModelActivity, error) {
	out := map[string]ModelActivity{}
	rows, err := db.pool.Query(ctx, `SELECT model, min(submitted_at) FROM request_log WHERE status = 'queued' GROUP BY model`)
	if err != nil {
		return nil, fmt.Errorf("controldb: activity: %w", err)
	}
	var id string
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		a := out[id]
		a.OldestQueued = at
		out[id] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("controldb: activity: %w", err)
	}
	rows, err = db.pool.Query(ctx, `SELECT DISTINCT ON (model) model, error, coalesce(finished_at, submitted_at)
		FROM request_log WHERE status IN ('failed', 'rejected') ORDER BY model, coalesce(finished_at, submitted_at) DESC`)
	if err != nil {
		return nil, fmt.Errorf("controldb: activity: %w", err)
	}
	var msg string
	_, err = pgx.ForEachRow(rows, []any{&id, &msg, &at}, func() error {
		a := out[id]
		a.LastError, a.LastErrorAt = msg, at
		out[id] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("controldb: activity: %w", err)
	}
	return out, nil
}
