package dbmanager

import (
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
)

// SetCrashAfterCommit installs the crash hook (tests only).
func (m *Manager) SetCrashAfterCommit(f func() bool) { m.crashAfterCommit = f }

// SetLoseDelivery installs the lost-delivery hook (tests only).
func (m *Manager) SetLoseDelivery(f func(jetstream.Msg) bool) { m.loseDelivery = f }

// SetCompaction sets Config.CompactFree and CompactMinBytes (tests only).
func (m *Manager) SetCompaction(free float64, minBytes int64) {
	m.cfg.CompactFree, m.cfg.CompactMinBytes = free, minBytes
}

// SetBlockSize sets Config.BlockSize (tests only).
func (m *Manager) SetBlockSize(n int) { m.cfg.BlockSize = n }

// SetArchiveLimits sets the rows of a data file written whole, the size
// under which a table is written whole and the file count above which
// files are merged, until the returned function restores them (tests only;
// not concurrent with a running db-manager's cut).
func SetArchiveLimits(rows, small int64, files int) (restore func()) {
	r, s, f := fileRows, smallTableBytes, maxFiles
	fileRows, smallTableBytes, maxFiles = rows, small, files
	return func() { fileRows, smallTableBytes, maxFiles = r, s, f }
}

// SetMemoryLimit sets Config.MemoryLimit, DuckDB's memory_limit (tests only).
func (m *Manager) SetMemoryLimit(limit string) { m.cfg.MemoryLimit = limit }

// SetLog replaces the logger (tests only).
func (m *Manager) SetLog(l *slog.Logger) { m.log = l.With("model", m.cfg.Model) }

// SetCancelHooks installs the hooks run before and after a batch's read of
// the cancels bucket (tests only).
func (m *Manager) SetCancelHooks(before, after func()) {
	m.beforeCancelRead, m.afterCancelRead = before, after
}
