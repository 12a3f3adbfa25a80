package dbmanager

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/teatree/teatree/internal/svcinfo"
	"github.com/teatree/teatree/model"
)

// modulesOf is the modules column of _teatree.applied for it: the JSON
// array of the module digests an applied request ran, NULL for none.
func modulesOf(it *item) any {
	if it.status != model.StatusApplied || len(it.result.Modules) == 0 {
		return nil
	}
	b, err := json.Marshal(it.result.Modules)
	if err != nil {
		return nil
	}
	return string(b)
}

// lineage returns the lineage of cut c from the bookkeeping of its stream
// range (still in the live file: it is dropped only after the version is
// published): the parent version, every request with its outcome, the
// module digests of the applied ones, the versions of other models they
// read, and the build and DuckDB versions.
func (m *Manager) lineage(ctx context.Context, c cut) (model.Lineage, error) {
	l := model.Lineage{Parent: c.Version - 1, Build: svcinfo.Version(), DuckDB: m.duckdbVersion, Requests: []model.LineageRequest{}}
	rows, err := m.db.QueryContext(ctx, `SELECT request_id, function, coalesce(digest, ''), status, seq, modules, reads FROM _teatree.applied WHERE seq BETWEEN $1 AND $2
		UNION ALL SELECT request_id, function, '', 'rejected', seq, NULL, NULL FROM _teatree.refused WHERE seq BETWEEN $1 AND $2 ORDER BY seq`, c.FirstSeq, c.LastSeq)
	if err != nil {
		return l, fmt.Errorf("dbmanager: lineage of version %d: %w", c.Version, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r model.LineageRequest
		var status string
		var modules, reads sql.NullString
		if err := rows.Scan(&r.ID, &r.Function, &r.Digest, &status, &r.Seq, &modules, &reads); err != nil {
			return l, fmt.Errorf("dbmanager: lineage of version %d: %w", c.Version, err)
		}
		r.Status = model.Status(status)
		l.Requests = append(l.Requests, r)
		if modules.Valid {
			var ds []string
			if err := json.Unmarshal([]byte(modules.String), &ds); err == nil {
				l.Modules = append(l.Modules, ds...)
			}
		}
		if reads.Valid {
			var rs []model.ModelVersion
			if err := json.Unmarshal([]byte(reads.String), &rs); err == nil {
				l.Reads = append(l.Reads, rs...)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return l, fmt.Errorf("dbmanager: lineage of version %d: %w", c.Version, err)
	}
	slices.Sort(l.Modules)
	l.Modules = slices.Compact(l.Modules)
	l.Reads = sortReads(l.Reads)
	return l, nil
}
