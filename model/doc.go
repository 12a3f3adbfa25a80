// Package model holds teatree's domain types: model ids, requests,
// notifications, statuses and the sentinel errors every other package
// branches on. It imports no outside system.
//
// A model is a versioned DuckDB database. Clients submit requests (a
// function name plus JSON args) to a model; the model's single db-manager
// applies them in stream order, exactly once, and publishes each new state
// as an immutable version numbered 1, 2, 3, …
package model
