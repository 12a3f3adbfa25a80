package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/nats-io/nats.go"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/kube"
	"github.com/teatree/teatree/telemetry"
)

// modelInfo gives the kube.Runner the size class of a model.
type modelInfo struct{ ctl *controldb.DB }

func (i modelInfo) SizeClass(ctx context.Context, m string) (string, error) {
	mdl, err := i.ctl.GetModel(ctx, m)
	return mdl.SizeClass, err
}

// runKubernetes dispatches with a StatefulSet per model, while this
// replica is the leader (a coordination.k8s.io Lease). When dispatching
// fails it releases the Lease and returns the error: the process exits
// non-zero and Kubernetes restarts it.
func runKubernetes(ctx context.Context, cfg DispatcherConfig, deps *Deps, log *slog.Logger) error {
	rc, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("kubernetes mode runs in a pod: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	runner, err := kube.NewRunner(cs, modelInfo{deps.Ctl}, kube.Config{Namespace: cfg.Namespace, Image: cfg.DBManagerImage}, log)
	if err != nil {
		return err
	}
	d := dispatcher.New(cfg.Dispatcher, log, deps.JS, deps.Ctl, deps.Store, runner)
	log.Info("dispatcher waiting for leadership", "namespace", cfg.Namespace, "identity", cfg.PodName)
	return kube.RunWithLeaderElection(ctx, cs, cfg.Namespace, cfg.PodName, func(ctx context.Context) error {
		log.Info("dispatcher leading")
		return d.Run(ctx)
	})
}

// serveHealth serves /livez (the process answers) and /readyz (connected
// to NATS) on addr until ctx ends.
func serveHealth(ctx context.Context, addr string, nc *nats.Conn) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", telemetry.Handler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return telemetry.Serve(ctx, ln, mux)
}
