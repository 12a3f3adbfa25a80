//go:build duckdb_arrow

package reader

import (
	"context"
	"database/sql/driver"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/duckdb/duckdb-go/v2"
)

// arrowQuery runs q on the DuckDB driver connection dc and returns its
// result as Arrow record batches (duckdb-go's Arrow interface, which needs
// the duckdb_arrow build tag). The reader must be released.
func arrowQuery(ctx context.Context, dc any, q string) (array.RecordReader, error) {
	conn, ok := dc.(driver.Conn)
	if !ok {
		return nil, fmt.Errorf("reader: not a driver connection: %T", dc)
	}
	a, err := duckdb.NewArrowFromConn(conn)
	if err != nil {
		return nil, err
	}
	return a.QueryContext(ctx, q)
}

// arrowAvailable says whether this binary serves queries.
const arrowAvailable = true
