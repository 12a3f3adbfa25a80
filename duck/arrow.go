//go:build duckdb_arrow

package duck

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/duckdb/duckdb-go/v2"
)

// ArrowAvailable says whether this binary has DuckDB's Arrow interface
// (the duckdb_arrow build tag).
const ArrowAvailable = true

// QueryArrow runs the query q on conn and calls f with its result as Arrow
// record batches (duckdb-go's Arrow interface: one batch per DuckDB data
// chunk, 2048 rows at most), read as f asks for them. The reader is valid
// only inside f. Errors: DuckDB's for q, else f's.
func QueryArrow(ctx context.Context, conn *sql.Conn, q string, f func(array.RecordReader) error) error {
	return conn.Raw(func(dc any) error {
		a, err := arrowConn(dc)
		if err != nil {
			return err
		}
		rr, err := a.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		defer rr.Release()
		return f(rr)
	})
}

// RegisterArrow makes the record batches of rr the view name on conn
// (DuckDB's arrow scan of a C stream): one scan reads rr once, batch by
// batch as DuckDB needs them. Call release when the view is no longer
// read; conn must stay open until then.
func RegisterArrow(conn *sql.Conn, rr array.RecordReader, name string) (release func(), err error) {
	err = conn.Raw(func(dc any) error {
		a, err := arrowConn(dc)
		if err != nil {
			return err
		}
		release, err = a.RegisterView(rr, name)
		return err
	})
	return release, err
}

func arrowConn(dc any) (*duckdb.Arrow, error) {
	c, ok := dc.(driver.Conn)
	if !ok {
		return nil, fmt.Errorf("duck: not a driver connection: %T", dc)
	}
	return duckdb.NewArrowFromConn(c)
}
