package dbmanager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/teatree/teatree/telemetry"
)

// Health endpoints, served on Config.HealthAddr when set (Kubernetes
// probes):
//
//	GET /livez   200 when a small file can be written and fsynced in the
//	             model's data directory (catches a volume remounted
//	             read-only), else 500. Use it for liveness and, with a
//	             generous failure threshold, as the startup probe.
//	GET /readyz  200 once the writer lease is held and the consumer bound,
//	             else 503.
//	GET /metrics the process's metrics in the Prometheus text format.
func (m *Manager) serveHealth(ctx context.Context) error {
	if m.cfg.HealthAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if err := m.probeVolume(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "waiting for the writer lease or the consumer", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", telemetry.Handler())
	ln, err := net.Listen("tcp", m.cfg.HealthAddr)
	if err != nil {
		return fmt.Errorf("dbmanager: health listener: %w", err)
	}
	if err := telemetry.Serve(ctx, ln, mux); err != nil {
		return fmt.Errorf("dbmanager: health: %w", err)
	}
	return nil
}

// probeVolume writes, fsyncs and removes a small file in the model's
// directory.
func (m *Manager) probeVolume() error {
	if err := os.MkdirAll(m.cfg.dir(), 0o755); err != nil {
		return err
	}
	path := filepath.Join(m.cfg.dir(), ".livez")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Remove(path)
}
