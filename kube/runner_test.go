package kube

// The Runner and leader election tests run against a real control plane
// (internal/kubetest: etcd, kube-apiserver, the StatefulSet controller
// and kwok's fake node), one per test process, a namespace per test; they
// skip when its binaries were never built (scripts/k8s-test-bins.sh).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/teatree/teatree/deploy"
	"github.com/teatree/teatree/internal/kubetest"
)

func TestMain(m *testing.M) {
	// client-go's leader election logs each failed request of a dead
	// leader through klog, on stderr.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	kubetest.Main(m)
}

// sizes is a ModelInfo backed by a map.
type sizes struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *sizes) SizeClass(_ context.Context, model string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.m[model]
	if !ok {
		return "", fmt.Errorf("model %s: not found", model)
	}
	return c, nil
}

func (s *sizes) set(model, class string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[model] = class
}

func newTestRunner(t *testing.T, client kubernetes.Interface, ns string, info ModelInfo) *Runner {
	t.Helper()
	r, err := NewRunner(client, info, Config{
		Namespace:    ns,
		Image:        "ghcr.io/teatree/dbmanager:test",
		StopTimeout:  20 * time.Second,
		PollInterval: 50 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func getSTS(t *testing.T, client kubernetes.Interface, ns, name string) *appsv1.StatefulSet {
	t.Helper()
	sts, err := client.AppsV1().StatefulSets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

func envMap(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// TestRunnerStatefulSetsPassChecks runs deploy's rules on the
// StatefulSet of every size class.
func TestRunnerStatefulSetsPassChecks(t *testing.T) {
	r := newTestRunner(t, nil, "teatree", nil)
	for _, c := range SizeClasses {
		if err := deploy.CheckStatefulSet(typed(t, r.StatefulSet("m", c))); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	// And the rules catch a broken one.
	bad := r.StatefulSet("m", Small)
	bad.Spec.Template.Spec.Containers[0].SecurityContext.WithReadOnlyRootFilesystem(false)
	if err := deploy.CheckStatefulSet(typed(t, bad)); err == nil {
		t.Error("CheckStatefulSet accepted a writable root filesystem")
	}
}

func TestStatefulSetName(t *testing.T) {
	long := strings.Repeat("a", 64)
	models := []string{
		"a", "sales", "sales-2024", "sales_2024", "sales__2024", "_x_", "x-",
		strings.Repeat("m", 48), strings.Repeat("m", 49),
		long, long[:63] + "b", long[:63], long[:62] + "_",
		strings.Repeat("a_", 32), strings.Repeat("a-", 32),
		strings.Repeat("0", 64), strings.Repeat("-", 64), strings.Repeat("_", 64),
	}
	seen := map[string]string{}
	for _, m := range models {
		name := StatefulSetName(m)
		if len(name) > 52 {
			t.Errorf("%q: name %q has %d characters, want at most 52", m, name, len(name))
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("%q: name %q: %v", m, name, errs)
		}
		// The pod and the PVC names derived from it are valid too.
		if errs := validation.IsDNS1123Label(name + "-0"); len(errs) > 0 {
			t.Errorf("%q: pod name: %v", m, errs)
		}
		if errs := validation.IsDNS1123Subdomain("data-" + name + "-0"); len(errs) > 0 {
			t.Errorf("%q: PVC name: %v", m, errs)
		}
		if errs := validation.IsValidLabelValue(modelLabel(m)); len(errs) > 0 {
			t.Errorf("%q: model label %q: %v", m, modelLabel(m), errs)
		}
		if prev, ok := seen[name]; ok {
			t.Errorf("models %q and %q both get %q", prev, m, name)
		}
		seen[name] = m
	}
	for m, want := range map[string]string{"sales": "dbm-sales", strings.Repeat("m", 48): "dbm-" + strings.Repeat("m", 48)} {
		if got := StatefulSetName(m); got != want {
			t.Errorf("StatefulSetName(%q) = %q, want %q", m, got, want)
		}
	}
}

func FuzzStatefulSetName(f *testing.F) {
	f.Add("sales")
	f.Add("a_b")
	f.Add(strings.Repeat("x", 64))
	f.Fuzz(func(t *testing.T, m string) {
		name := StatefulSetName(m)
		if len(name) > 52 || len(validation.IsDNS1123Label(name)) > 0 {
			t.Errorf("StatefulSetName(%q) = %q: not a DNS label of at most 52 characters", m, name)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running is r.Running, which must not fail.
func running(t *testing.T, r *Runner) []string {
	t.Helper()
	models, err := r.Running(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return models
}

// typed is the StatefulSet an apply configuration describes.
func typed(t *testing.T, ac *appsv1ac.StatefulSetApplyConfiguration) *appsv1.StatefulSet {
	t.Helper()
	b, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := json.Unmarshal(b, &sts); err != nil {
		t.Fatal(err)
	}
	return &sts
}
