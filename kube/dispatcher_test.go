package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/teatree/teatree/controldb"
	"github.com/teatree/teatree/dispatcher"
	"github.com/teatree/teatree/internal/kubetest"
	"github.com/teatree/teatree/internal/stacktest"
	"github.com/teatree/teatree/queue"
)

// ctlInfo is the ModelInfo of the dispatcher's Kubernetes mode
// (internal/app): the size class from the control tables.
type ctlInfo struct{ ctl *controldb.DB }

func (i ctlInfo) SizeClass(ctx context.Context, m string) (string, error) {
	mdl, err := i.ctl.GetModel(ctx, m)
	return mdl.SizeClass, err
}

// TestDispatcherStartsStatefulSet: the dispatcher in Kubernetes mode (real
// NATS and Postgres, leading on a real Lease) answers a request for a
// model by applying its StatefulSet in the model's size class, whose pod
// then runs (kwok); no db-manager image runs, so the request stays
// pending and the StatefulSet stays at one replica.
func TestDispatcherStartsStatefulSet(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "dispatch")
	s := stacktest.New(t, queue.Config{})
	s.CreateModel(t, controldb.Model{ID: "sales", SizeClass: "large"})
	r := newTestRunner(t, c.Client, ns, ctlInfo{s.Ctl})
	d := dispatcher.New(dispatcher.Config{}, stacktest.Logger(t), s.JS, s.Ctl, s.Store, r)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runWithLeaderElection(ctx, c.Client, ns, "pod-1", testTimings, d.Run) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher: %v", err)
		}
	})
	s.Submit(t, stacktest.Request("sales", "sales-create", "create_table", map[string]any{"table": "t", "columns": []map[string]string{{"name": "n", "type": "BIGINT"}}}))
	pod := waitPod(t, c, ns, "dbm-sales-0", runningReady)
	if mem := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; mem.String() != "16Gi" {
		t.Errorf("pod memory limit = %s, want the large class's 16Gi", mem.String())
	}
	sts := getSTS(t, c.Client, ns, "dbm-sales")
	if sts.Labels[LabelSizeClass] != "large" || *sts.Spec.Replicas != 1 {
		t.Errorf("statefulset: size class %s, %d replicas; want large, 1", sts.Labels[LabelSizeClass], *sts.Spec.Replicas)
	}
	if got := running(t, r); len(got) != 1 || got[0] != "sales" {
		t.Errorf("Running = %v, want [sales]", got)
	}
}
