package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/objstore"
)

// CheckArchive checks the Parquet archive of a version (its manifest's
// tables) against its snapshot file at path: every data file is in store
// with the sha256 and row count the manifest gives, and read_parquet over
// a table's files holds exactly the snapshot table's rows (compared as
// multisets in DuckDB, both ways, with the same column names and types).
// The files are downloaded into dir. It returns the first difference.
func CheckArchive(ctx context.Context, store objstore.Store, tables []Table, path, dir string) error {
	db, err := duck.Open(ctx, "", duck.Options{Threads: 2, AllowedDirs: []string{filepath.Dir(path), dir}})
	if err != nil {
		return fmt.Errorf("snapshot: check archive: %w", err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: check archive: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "ATTACH "+duck.Literal(path)+" AS s (READ_ONLY)"); err != nil {
		return fmt.Errorf("snapshot: check archive: %w", err)
	}
	snap, err := describe(ctx, conn, "s")
	if err != nil {
		return err
	}
	if err := SameRows(snap, tables); err != nil {
		return fmt.Errorf("snapshot: the manifest does not match the snapshot: %w", err)
	}
	for _, t := range tables {
		files := t.DataFiles()
		if len(files) == 0 {
			return fmt.Errorf("snapshot: table %s lists no data file", t.Name)
		}
		paths := make([]string, len(files))
		var rows int64
		for i, f := range files {
			paths[i] = filepath.Join(dir, f.SHA256+".parquet")
			if _, err := os.Stat(paths[i]); err != nil {
				sum, err := objstore.GetFile(ctx, store, f.Key, paths[i])
				if err != nil {
					return fmt.Errorf("snapshot: table %s: data file %s: %w", t.Name, f.Key, err)
				}
				if sum != f.SHA256 {
					return fmt.Errorf("snapshot: table %s: data file %s has sha256 %s, the manifest %s", t.Name, f.Key, sum, f.SHA256)
				}
			}
			var n int64
			if err := conn.QueryRowContext(ctx, "SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata("+duck.Literal(paths[i])+")").Scan(&n); err != nil {
				return fmt.Errorf("snapshot: table %s: data file %s: %w", t.Name, f.Key, err)
			}
			if n != f.Rows {
				return fmt.Errorf("snapshot: table %s: data file %s has %d rows, the manifest %d", t.Name, f.Key, n, f.Rows)
			}
			rows += n
		}
		if rows != t.Rows {
			return fmt.Errorf("snapshot: table %s: its data files hold %d rows, the table %d", t.Name, rows, t.Rows)
		}
		lits := make([]string, len(paths))
		for i, p := range paths {
			lits[i] = duck.Literal(p)
		}
		archive := "(SELECT " + RestoreList(t.Columns) + " FROM read_parquet([" + strings.Join(lits, ", ") + "]))"
		table := "(SELECT * FROM s.main." + duck.Ident(t.Name) + ")"
		if err := sameTypes(ctx, conn, table, archive); err != nil {
			return fmt.Errorf("snapshot: table %s: %w", t.Name, err)
		}
		var diff int64
		q := "SELECT count(*) FROM ((" + table + " EXCEPT ALL " + archive + ") UNION ALL (" + archive + " EXCEPT ALL " + table + "))"
		if err := conn.QueryRowContext(ctx, q).Scan(&diff); err != nil {
			return fmt.Errorf("snapshot: table %s: compare with its data files: %w", t.Name, err)
		}
		if diff != 0 {
			return fmt.Errorf("snapshot: table %s: %d rows differ between the snapshot and its data files", t.Name, diff)
		}
	}
	return nil
}

// sameTypes compares the column names and types of queries a and b.
func sameTypes(ctx context.Context, conn *sql.Conn, a, b string) error {
	describe := func(q string) (string, error) {
		rows, err := conn.QueryContext(ctx, "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE "+q+")")
		if err != nil {
			return "", err
		}
		defer rows.Close()
		var s string
		for rows.Next() {
			if err := rows.Scan(&s); err != nil {
				return "", err
			}
		}
		return s, rows.Err()
	}
	ta, err := describe(a)
	if err != nil {
		return fmt.Errorf("describe: %w", err)
	}
	tb, err := describe(b)
	if err != nil {
		return fmt.Errorf("describe its data files: %w", err)
	}
	if ta != tb {
		return fmt.Errorf("the snapshot has columns (%s), its data files (%s)", ta, tb)
	}
	return nil
}
