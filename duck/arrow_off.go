//go:build !duckdb_arrow

package duck

import (
	"context"
	"database/sql"

	"github.com/apache/arrow-go/v18/arrow/array"
)

// ArrowAvailable says whether this binary has DuckDB's Arrow interface
// (the duckdb_arrow build tag).
const ArrowAvailable = false

// QueryArrow needs the duckdb_arrow build tag: without it, ErrNoArrow.
func QueryArrow(context.Context, *sql.Conn, string, func(array.RecordReader) error) error {
	return ErrNoArrow
}

// RegisterArrow needs the duckdb_arrow build tag: without it, ErrNoArrow.
func RegisterArrow(*sql.Conn, array.RecordReader, string) (func(), error) { return nil, ErrNoArrow }
