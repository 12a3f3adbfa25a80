// Package duck opens DuckDB databases the way teatree uses them: explicit
// threads and memory_limit, and external access switched off except for the
// directories a caller names (the staged-payload and snapshot directories of
// a db-manager).
package duck

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/duckdb/duckdb-go/v2"
)

// Options configure Open. The zero value opens read-write with DuckDB's
// defaults for threads and memory and external access switched off.
type Options struct {
	// Threads is DuckDB's `threads` setting; 0 leaves DuckDB's default (the
	// number of cores).
	Threads int
	// MemoryLimit is DuckDB's `memory_limit`, e.g. "1GB"; "" leaves DuckDB's
	// default (80% of RAM).
	MemoryLimit string
	// ReadOnly opens the file with access_mode=read_only.
	ReadOnly bool
	// AllowedDirs are directories DuckDB may read and write files in once
	// external access is off (DuckDB's `allowed_directories`). Each must be
	// absolute.
	AllowedDirs []string
	// ExternalAccess leaves DuckDB's enable_external_access on. Only tools
	// that run trusted SQL (teactl query on a pulled copy) set it.
	ExternalAccess bool
	// BlockSize is the block size in bytes of the file if Open creates it
	// (DuckDB's default_block_size, a power of two from 16 KiB to 256 KiB);
	// 0 leaves DuckDB's 256 KiB. An existing file keeps its own.
	BlockSize int
	// Attach lists DuckDB files ATTACHed read-only before external access
	// is switched off (a locked instance reads no other file): a query
	// over a model group attaches its members' versions.
	Attach []Attachment
}

// Attachment is a DuckDB file Open attaches read-only as catalog Alias.
type Attachment struct {
	Path  string
	Alias string
}

// Open opens the DuckDB database at path ("" for in-memory) with opts. The
// settings are global to the database instance, so every connection of the
// returned pool has them.
func Open(ctx context.Context, path string, opts Options) (*sql.DB, error) {
	q := url.Values{}
	if opts.ReadOnly {
		q.Set("access_mode", "read_only")
	}
	if opts.BlockSize > 0 {
		q.Set("default_block_size", strconv.Itoa(opts.BlockSize))
	}
	dsn := path
	if len(q) > 0 {
		dsn += "?" + q.Encode()
	}
	conn, err := duckdb.NewConnector(dsn, nil)
	if err != nil {
		return nil, fmt.Errorf("duck: open %s: %w", path, err)
	}
	db := sql.OpenDB(conn)
	var stmts []string
	for _, a := range opts.Attach {
		stmts = append(stmts, "ATTACH "+Literal(a.Path)+" AS "+Ident(a.Alias)+" (READ_ONLY)")
	}
	if opts.Threads > 0 {
		stmts = append(stmts, fmt.Sprintf("SET GLOBAL threads = %d", opts.Threads))
	}
	if opts.MemoryLimit != "" {
		stmts = append(stmts, "SET GLOBAL memory_limit = "+Literal(opts.MemoryLimit))
	}
	if !opts.ExternalAccess {
		if len(opts.AllowedDirs) > 0 {
			lits := make([]string, len(opts.AllowedDirs))
			for i, d := range opts.AllowedDirs {
				if !strings.HasSuffix(d, "/") {
					d += "/"
				}
				lits[i] = Literal(d)
			}
			stmts = append(stmts, "SET GLOBAL allowed_directories = ["+strings.Join(lits, ", ")+"]")
		}
		// DuckDB 1.5 runs a multi-statement (COPY FROM DATABASE, "a; b")
		// inside an open transaction between two SET GLOBAL
		// current_transaction_invalidation_policy, which a locked
		// configuration refuses unless it is in allowed_configs. The policy
		// only decides which errors abort the current transaction.
		stmts = append(stmts, "SET GLOBAL enable_external_access = false",
			"SET GLOBAL allowed_configs = ['current_transaction_invalidation_policy']",
			"SET GLOBAL lock_configuration = true")
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			db.Close()
			return nil, fmt.Errorf("duck: open %s: %s: %w", path, s, err)
		}
	}
	return db, nil
}

// Ident quotes an identifier (table, column, schema) for DuckDB: wrapped in
// double quotes with embedded double quotes doubled, as the SQL standard and
// DuckDB's own quoting do.
func Ident(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Literal quotes a string literal for DuckDB, for the few places (SET,
// ATTACH, COPY TO) where DuckDB does not accept a bound parameter.
func Literal(s string) string {
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// ErrNoArrow is the error of QueryArrow and RegisterArrow in a binary
// built without the duckdb_arrow build tag, which duckdb-go's Arrow
// interface needs.
var ErrNoArrow = errors.New("this binary was built without the duckdb_arrow build tag, which DuckDB's Arrow interface needs: build with 'make build' (or go build -tags duckdb_arrow)")

// UnionMember is a DuckDB file OpenUnion attaches, and the names of the
// tables (in schema main) it holds.
type UnionMember struct {
	Path   string
	Tables []string
}

// OpenUnion opens an in-memory DuckDB with opts (its Attach is replaced)
// that attaches the members' files read-only as db_1, db_2, … in order,
// before external access is locked, and has, for every table name any
// member holds, a view main.<table>: the UNION ALL BY NAME of that table
// in the members holding it (a member without the table adds no rows; a
// column a member lacks is NULL in its rows). A query over a model group
// runs there, on a reader and in teactl's local path.
func OpenUnion(ctx context.Context, members []UnionMember, opts Options) (*sql.DB, error) {
	opts.Attach = nil
	tables := map[string][]string{} // table → the aliases of the members holding it
	for i, m := range members {
		alias := "db_" + strconv.Itoa(i+1)
		opts.Attach = append(opts.Attach, Attachment{Path: m.Path, Alias: alias})
		for _, t := range m.Tables {
			tables[t] = append(tables[t], alias)
		}
	}
	db, err := Open(ctx, "", opts)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(tables))
	for _, t := range names {
		parts := make([]string, len(tables[t]))
		for i, a := range tables[t] {
			parts[i] = "SELECT * FROM " + Ident(a) + ".main." + Ident(t)
		}
		if _, err := db.ExecContext(ctx, "CREATE VIEW main."+Ident(t)+" AS "+strings.Join(parts, " UNION ALL BY NAME ")); err != nil {
			db.Close()
			return nil, fmt.Errorf("duck: view %s over the union: %w", t, err)
		}
	}
	return db, nil
}

// Append appends rows to schema.table with DuckDB's appender, in the
// table's column order, inside the transaction open on conn (an error
// aborts that transaction). For many rows it costs a fraction of a
// multi-row INSERT, whose every bound value DuckDB binds and plans.
func Append(conn *sql.Conn, schema, table string, rows [][]driver.Value) error {
	return conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("duck: not a driver connection: %T", dc)
		}
		a, err := duckdb.NewAppenderFromConn(c, schema, table)
		if err != nil {
			return fmt.Errorf("duck: appender on %s.%s: %w", schema, table, err)
		}
		for _, r := range rows {
			if err := a.AppendRow(r...); err != nil {
				a.Close()
				return fmt.Errorf("duck: append to %s.%s: %w", schema, table, err)
			}
		}
		if err := a.Close(); err != nil {
			return fmt.Errorf("duck: append to %s.%s: %w", schema, table, err)
		}
		return nil
	})
}
