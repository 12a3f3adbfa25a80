package dbmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/teatree/teatree/model"
)

// verdict is what becomes of a request, a batch or a publication after it
// returned an error (docs/decisions.md, Failure policy). judge gives it,
// and only judge.
type verdict int

const (
	// applied: no error.
	applied verdict = iota
	// failed: the request's own fault (its args, its SQL, its payload, a
	// constraint it violates). The request is recorded and notified
	// failed, for good; the batch goes on.
	failed
	// retry: infrastructure or resources (the object store, Postgres, the
	// disk, DuckDB's memory, a transaction conflict, an interrupt, a
	// shutdown). Nothing is failed: the batch or the publication is
	// rolled back and tried again after a backoff (retryBackoff).
	retry
	// fatal: the process must exit and be restarted by its supervisor (a
	// DuckDB fatal or internal error, ErrFatal, a stale epoch); DuckDB
	// replays its WAL at the next start.
	fatal
)

func (v verdict) String() string {
	switch v {
	case applied:
		return "applied"
	case failed:
		return "failed"
	case retry:
		return "retry"
	case fatal:
		return "fatal"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// transientError marks an error of a resource that may go away (the
// object store, Postgres, the local disk) that is not recognisable by its
// type: judge retries it.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// judge maps err, returned while ctx was live, to its verdict. In order:
//
//   - nil: applied;
//   - ErrFatal, model.ErrStaleEpoch, a DuckDB fatal or internal error: fatal;
//   - ctx ended (a shutdown, a lost lease), or any context error: retry;
//   - transientError, or a DuckDB out of memory, interrupt or transaction
//     conflict: retry, even when a function marked it model.ErrInvalid;
//   - model.ErrInvalid: failed (the function found the request at fault,
//     e.g. a DuckDB I/O error reading its staged payload: a corrupt gzip
//     or zstd stream);
//   - any other DuckDB I/O, connection, network or HTTP error: retry;
//   - anything else: failed. A function's errors are its request's
//     unless marked otherwise: DuckDB's constraint, conversion, binder,
//     parser, catalog … errors, a missing payload.
//
// An error that is not a request's (a batch's bookkeeping, a publication)
// has no request to fail: the caller decides what failed means there
// (applyWithRetry exits, publishLoop retries).
func judge(ctx context.Context, err error) verdict {
	var de *duckdb.Error
	var te transientError
	isDuck := errors.As(err, &de)
	switch {
	case err == nil:
		return applied
	case errors.Is(err, ErrFatal), errors.Is(err, model.ErrStaleEpoch),
		isDuck && (de.Type == duckdb.ErrorTypeFatal || de.Type == duckdb.ErrorTypeInternal):
		return fatal
	case ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return retry
	case errors.As(err, &te), isDuck && resourceError(de.Type):
		return retry
	case errors.Is(err, model.ErrInvalid):
		return failed
	case isDuck && ioError(de.Type):
		return retry
	}
	return failed
}

// resourceError reports whether a DuckDB error of type t is never caused
// by what a request asked for: memory, a concurrent transaction, an
// interrupt. The same request may succeed later.
func resourceError(t duckdb.ErrorType) bool {
	switch t {
	case duckdb.ErrorTypeOutOfMemory, duckdb.ErrorTypeInterrupt, duckdb.ErrorTypeTransaction:
		return true
	}
	return false
}

// ioError reports whether a DuckDB error of type t is one of I/O: the
// disk, a connection, the network. It is the machine's unless a function
// says the request's file caused it (model.ErrInvalid).
func ioError(t duckdb.ErrorType) bool {
	switch t {
	case duckdb.ErrorTypeIO, duckdb.ErrorTypeConnection, duckdb.ErrorTypeNetwork, duckdb.ErrorTypeHTTP:
		return true
	}
	return false
}

// fatalError is err, judged fatal while doing what, wrapped in ErrFatal
// unless it is already.
func fatalError(what string, err error) error {
	if errors.Is(err, ErrFatal) {
		return fmt.Errorf("dbmanager: %s: %w", what, err)
	}
	return fmt.Errorf("dbmanager: %s: %w: %w", what, ErrFatal, err)
}

// Backoff between the attempts of a retried batch or publication: 500 ms,
// then ×1.5 each attempt with ±50 % jitter, at most 30 s, without end.
const (
	retryInitial = 500 * time.Millisecond
	retryMax     = 30 * time.Second
)

// retryBackoff calls op until it returns nil or an error for which again
// (of its verdict, judge) is false, waiting with exponential backoff
// between attempts and logging each retry as msg. It returns nil, op's last
// error, or ctx's error as soon as ctx ends, also in the middle of a wait.
func (m *Manager) retryBackoff(ctx context.Context, msg string, again func(verdict) bool, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = retryInitial, retryMax
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := op()
		if err != nil && !again(judge(ctx, err)) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, d time.Duration) {
		m.log.Warn(msg, "err", err, "in", d.Round(time.Millisecond))
		m.errs.Record(fmt.Errorf("%s: %w", msg, err))
	}))
	return err
}
