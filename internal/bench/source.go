package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/internal/pgcluster"
	"github.com/teatree/teatree/model"
)

// The Postgres source of scenario 2g: table sourceTable in the bench's own
// Postgres cluster (the teatree database), which the db-managers know as
// source sourceName (TEATREE_SOURCE_TEABENCH, set by start).
const (
	sourceName  = "teabench"
	sourceTable = "teabench.flights"
)

// pgTypes maps the DuckDB types of the flights file to Postgres.
var pgTypes = map[string]string{
	"TIMESTAMP": "timestamp", "DATE": "date", "SMALLINT": "smallint", "INTEGER": "integer",
	"BIGINT": "bigint", "DOUBLE": "double precision", "FLOAT": "real", "VARCHAR": "text", "BOOLEAN": "boolean",
}

// loadSource creates sourceTable in Postgres with the first n rows of the
// flights file (through a CSV file and COPY FROM STDIN), vacuumed and
// analysed so that the first read does not set hint bits.
func (b *bench) loadSource(ctx context.Context, n int) error {
	file, err := b.flightsFile(ctx)
	if err != nil {
		return err
	}
	db, err := duck.Open(ctx, "", duck.Options{Threads: b.cfg.Threads, ExternalAccess: true})
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet("+duck.Literal(file)+"))")
	if err != nil {
		return fmt.Errorf("bench: describe the flights: %w", err)
	}
	var defs []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return err
		}
		pt, ok := pgTypes[typ]
		if !ok {
			rows.Close()
			return fmt.Errorf("bench: flights column %s has type %s, which the Postgres source does not map", name, typ)
		}
		defs = append(defs, pgx.Identifier{name}.Sanitize()+" "+pt)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	csv := filepath.Join(b.dir, "input", "source.csv")
	if err := os.MkdirAll(filepath.Dir(csv), 0o755); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM read_parquet(%s) LIMIT %d) TO %s (HEADER)", duck.Literal(file), n, duck.Literal(csv))); err != nil {
		return fmt.Errorf("bench: write the source rows: %w", err)
	}
	defer os.Remove(csv)
	pg, err := pgx.Connect(ctx, b.pg.URL())
	if err != nil {
		return err
	}
	defer pg.Close(context.WithoutCancel(ctx))
	if _, err := pg.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS teabench; DROP TABLE IF EXISTS "+sourceTable+"; CREATE TABLE "+sourceTable+" ("+strings.Join(defs, ", ")+")"); err != nil {
		return fmt.Errorf("bench: create the source table: %w", err)
	}
	f, err := os.Open(csv)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := pg.PgConn().CopyFrom(ctx, f, "COPY "+sourceTable+" FROM STDIN (FORMAT csv, HEADER true)"); err != nil {
		return fmt.Errorf("bench: fill the source table: %w", err)
	}
	if _, err := pg.Exec(ctx, "VACUUM ANALYZE "+sourceTable); err != nil {
		return fmt.Errorf("bench: vacuum the source table: %w", err)
	}
	return nil
}

// psqlCopy is the source baseline: psql copies the rows of sourceTable out
// of Postgres (COPY … TO STDOUT, text format) into a file.
func (b *bench) psqlCopy(ctx context.Context, psql, out string) (time.Duration, error) {
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	defer os.Remove(out)
	defer f.Close()
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", b.pg.URL(), "-c", "COPY (SELECT * FROM "+sourceTable+") TO STDOUT")
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &errb
	t0 := time.Now()
	err = cmd.Run()
	if err == nil {
		err = f.Sync()
	}
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("bench: psql: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	return d, nil
}

// findPsql returns psql from the directory of the Postgres server
// binaries the bench runs, else from PATH.
func findPsql() (string, error) {
	if dir, err := pgcluster.FindBinaries(); err == nil {
		if p := filepath.Join(dir, "psql"); fileExists(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		return "", fmt.Errorf("bench: scenario 2g needs psql (Debian: apt-get install postgresql-client): %w", err)
	}
	return p, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// scenarioSource is 2g: an append from a Postgres source of -source-rows
// rows of the flights into a new model, submit→applied (the version
// published), vs psql copying the same rows out of Postgres into a file.
// The apply and publish shares come from the notification's timestamps.
func (b *bench) scenarioSource(ctx context.Context) ([]Result, error) {
	psql, err := findPsql()
	if err != nil {
		return nil, err
	}
	n := b.cfg.SourceRows
	if err := b.loadSource(ctx, n); err != nil {
		return nil, err
	}
	res := Result{ID: "2g", Name: fmt.Sprintf("append from a Postgres source: %d rows of the flights, submit→applied", n),
		Unit: "s", BaseName: `psql -c "COPY (SELECT * FROM the table) TO STDOUT" into a file`, Target: "ratio <= 2"}
	args, _ := json.Marshal(map[string]any{"table": "flights", "source": map[string]any{"name": sourceName, "table": sourceTable}})
	var tt, base, apply, publish []float64
	for r := 0; r <= b.cfg.Runs; r++ { // run 0 is the warm-up
		m := fmt.Sprintf("pgsrc-%d", r)
		if err := b.createModel(ctx, m); err != nil {
			return nil, err
		}
		d, note, err := b.submitWait(ctx, model.Request{ID: m + "-append", Model: m, Function: "append", Args: args}, 10*time.Minute)
		if err != nil {
			return nil, err
		}
		v, err := b.ctl.GetVersion(ctx, m, note.Version)
		if err != nil {
			return nil, err
		}
		if len(v.Tables) != 1 || v.Tables[0].Rows != int64(n) {
			return nil, fmt.Errorf("bench: %s version %d does not hold the %d source rows in one table", m, v.Version, n)
		}
		bd, err := b.psqlCopy(ctx, psql, filepath.Join(b.dir, "input", "psql.out"))
		if err != nil {
			return nil, err
		}
		ap, pub := note.Applied.Sub(note.Queued), note.Published.Sub(note.Applied)
		b.progress("2g run %d: teatree %.2f s (queued→applied %.2f s, applied→published %.2f s), psql %.2f s", r, sec(d), sec(ap), sec(pub), sec(bd))
		if r == 0 {
			continue
		}
		tt, base = append(tt, sec(d)), append(base, sec(bd))
		apply, publish = append(apply, sec(ap)), append(publish, sec(pub))
	}
	res.Teatree, res.Baseline = newStat(tt), ptr(newStat(base))
	res.setRatio("teatree s / psql s")
	res.Met = boolp(res.Ratio <= 2)
	res.Extra = map[string]any{"queued_applied_s": newStat(apply).Median, "applied_published_s": newStat(publish).Median}
	return []Result{res}, nil
}
