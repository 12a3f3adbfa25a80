package functions

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/teatree/teatree/duck"
	"github.com/teatree/teatree/model"
)

// ReadRef names the published version of another model a request reads
// (args.reads.<alias>): Version 0 means the latest one when the
// dispatcher accepts the request, which the dispatcher pins
// (docs/decisions.md, reads across models).
type ReadRef struct {
	Model   string `json:"model"`
	Version int64  `json:"version,omitempty"`
}

// MaxReads is the most other models one request may read.
const MaxReads = 8

// readsSchema is the args schema of reads.
const readsSchema = `"reads": {
      "type": "object", "maxProperties": 8,
      "description": "other models' published versions the query reads, by alias: the query names their tables alias.table (schema main of that version). version: a published version; left out, the latest one when the dispatcher accepts the request (pinned: a replay reads the same). The model must let this model read it (teactl model readers).",
      "propertyNames": {"pattern": "^[a-z_][a-z0-9_]{0,62}$"},
      "additionalProperties": {
        "type": "object", "additionalProperties": false, "required": ["model"],
        "properties": {
          "model": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
          "version": {"type": "integer", "minimum": 1}
        }
      }
    }`

// reservedAliases are database names an alias may not take: DuckDB's
// own catalogs and schemas, and teatree's.
var reservedAliases = []string{"main", "temp", "system", "memory", "information_schema", "pg_catalog"}

// checkReads checks args.reads without a model: aliases are lower-case
// identifiers that are not DuckDB's or teatree's names, models are model
// ids, versions are positive.
func checkReads(reads map[string]ReadRef) error {
	if len(reads) > MaxReads {
		return invalid("reads names %d models: at most %d are allowed", len(reads), MaxReads)
	}
	for _, alias := range slices.Sorted(maps.Keys(reads)) {
		r := reads[alias]
		if !tablePattern.MatchString(alias) || alias != strings.ToLower(alias) {
			return invalid("reads alias %s is not valid: use 1 to %d lower-case letters, digits and '_', not starting with a digit", model.Quote(alias), MaxTableLen)
		}
		if slices.Contains(reservedAliases, alias) || strings.HasPrefix(alias, internalPrefix) {
			return invalid("reads alias %q is reserved (DuckDB's or teatree's name): pick another", alias)
		}
		if err := model.ValidateID(r.Model); err != nil {
			return invalid("reads.%s.model: %v", alias, model.Shorten(err))
		}
		if r.Version < 0 {
			return invalid("reads.%s.version is %d: versions start at 1 (leave it out for the latest)", alias, r.Version)
		}
	}
	return nil
}

// ReadsOf returns args.reads of a request's args (nil when there are none
// or args do not decode): the dispatcher pins and authorises them, the
// db-manager attaches them.
func ReadsOf(args json.RawMessage) map[string]ReadRef {
	if !bytes.Contains(args, []byte(`"reads"`)) {
		return nil
	}
	var a struct {
		Reads map[string]ReadRef `json:"reads"`
	}
	if json.Unmarshal(args, &a) != nil || len(a.Reads) == 0 {
		return nil
	}
	return a.Reads
}

// checkReadsOf checks what Prepare cannot check from the args alone
// against the model m the request is for: it does not read m itself.
func checkReadsOf(m string, reads map[string]ReadRef) error {
	for _, alias := range slices.Sorted(maps.Keys(reads)) {
		if reads[alias].Model == m {
			return invalid("reads.%s names model %s itself: read its tables as main.t (or t)", alias, m)
		}
	}
	return nil
}

// AttachReads attaches on conn, outside any transaction, every read of
// reads READ_ONLY under its alias (the local file path returns) and
// returns the function that detaches them; the caller runs the request in
// a transaction of its own and detaches after COMMIT or ROLLBACK (DuckDB
// cannot detach a database the open transaction read). An alias that is
// a schema, table or database of the model is refused (alias.t would be
// ambiguous); such errors wrap model.ErrInvalid, path's are returned as
// they are.
func AttachReads(ctx context.Context, conn *sql.Conn, reads map[string]ReadRef, path func(ctx context.Context, alias string) (string, error)) (detach func(), err error) {
	var attached []string
	detach = func() {
		for _, a := range attached {
			conn.ExecContext(context.WithoutCancel(ctx), "DETACH DATABASE IF EXISTS "+duck.Ident(a))
		}
	}
	fail := func(err error) (func(), error) {
		detach()
		return func() {}, err
	}
	for _, alias := range slices.Sorted(maps.Keys(reads)) {
		var n int
		if err := conn.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM duckdb_schemas() WHERE lower(schema_name) = ?)
			+ (SELECT count(*) FROM duckdb_tables() WHERE lower(table_name) = ?)
			+ (SELECT count(*) FROM duckdb_databases() WHERE lower(database_name) = ?)`, alias, alias, alias).Scan(&n); err != nil {
			return fail(fmt.Errorf("look up alias %s: %w", alias, err))
		}
		if n > 0 {
			return fail(invalid("reads alias %q is also the name of a schema, table or database of this model: pick another alias", alias))
		}
		p, err := path(ctx, alias)
		if err != nil {
			return fail(err)
		}
		if _, err := conn.ExecContext(ctx, "ATTACH "+duck.Literal(p)+" AS "+duck.Ident(alias)+" (READ_ONLY)"); err != nil {
			return fail(fmt.Errorf("attach %s (model %s): %w", alias, reads[alias].Model, model.Shorten(err)))
		}
		attached = append(attached, alias)
	}
	return detach, nil
}
