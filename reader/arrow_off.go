//go:build !duckdb_arrow

package reader

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow/array"
)

func arrowQuery(context.Context, any, string) (array.RecordReader, error) { return nil, ErrNoArrow }

// arrowAvailable says whether this binary serves queries.
const arrowAvailable = false
