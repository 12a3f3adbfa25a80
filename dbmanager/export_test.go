package dbmanager

// SetCrashAfterCommit installs the crash hook (tests only).
func (m *Manager) SetCrashAfterCommit(f func() bool) { m.crashAfterCommit = f }
