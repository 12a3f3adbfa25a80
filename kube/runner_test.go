package kube

// These tests run Runner against client-go's fake clientset
// (k8s.io/client-go/kubernetes/fake), not a real API server: envtest's
// kube-apiserver and etcd binaries are not Go modules and cannot be built
// here. The fake stores objects and applies patches but runs no
// controllers and no admission or validation, so the StatefulSets are
// also checked with the rules deploy/ checks its manifests with, and a
// small stand-in for the StatefulSet controller sets status.replicas.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/teatree/teatree/deploy"
)

const testNS = "teatree"

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

func newTestRunner(t *testing.T, client kubernetes.Interface, info ModelInfo) *Runner {
	t.Helper()
	r, err := NewRunner(client, info, Config{
		Namespace:    testNS,
		Image:        "ghcr.io/teatree/dbmanager:test",
		StopTimeout:  2 * time.Second,
		PollInterval: 10 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func getSTS(t *testing.T, client kubernetes.Interface, name string) *appsv1.StatefulSet {
	t.Helper()
	sts, err := client.AppsV1().StatefulSets(testNS).Get(t.Context(), name, metav1.GetOptions{})
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

func TestRunnerEnsureCreates(t *testing.T) {
	client := fake.NewClientset()
	r := newTestRunner(t, client, &sizes{m: map[string]string{"sales": "medium"}})
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, client, "dbm-sales")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", sts.Spec.Replicas)
	}
	for k, want := range map[string]string{
		LabelName: "teatree", LabelComponent: "db-manager", LabelInstance: "dbm-sales",
		LabelPartOf: "teatree", LabelManagedBy: "teatree-dispatcher",
		LabelModel: "sales", LabelSizeClass: "medium",
	} {
		if got := sts.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
		if got := sts.Spec.Template.Labels[k]; got != want {
			t.Errorf("pod label %s = %q, want %q", k, got, want)
		}
	}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil ||
		p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("PVC retention policy = %+v, want Retain/Retain", p)
	}
	if n := len(sts.Spec.VolumeClaimTemplates); n != 1 {
		t.Fatalf("%d volume claim templates, want 1", n)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "teatree-model" {
		t.Errorf("storage class = %v, want teatree-model", pvc.Spec.StorageClassName)
	}
	if len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOncePod {
		t.Errorf("access modes = %v, want [ReadWriteOncePod]", pvc.Spec.AccessModes)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "20Gi" {
		t.Errorf("volume size = %s, want 20Gi", q.String())
	}

	pod := sts.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "ghcr.io/teatree/dbmanager:test" {
		t.Errorf("image = %s", c.Image)
	}
	for _, res := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		if cpu, mem := res[corev1.ResourceCPU], res[corev1.ResourceMemory]; cpu.String() != "4" || mem.String() != "4Gi" {
			t.Errorf("resources = cpu %s memory %s, want 4 and 4Gi", cpu.String(), mem.String())
		}
	}
	env := envMap(c)
	for k, want := range map[string]string{
		"TEATREE_MODEL": "sales", "TEATREE_DATA_DIR": "/data",
		"TEATREE_DUCKDB_THREADS": "4", "TEATREE_DUCKDB_MEMORY_LIMIT": "2816MiB",
		"TEATREE_HEALTH_ADDR": ":8080",
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	var refs []string
	for _, e := range c.EnvFrom {
		switch {
		case e.ConfigMapRef != nil:
			refs = append(refs, "configmap/"+e.ConfigMapRef.Name)
		case e.SecretRef != nil:
			refs = append(refs, "secret/"+e.SecretRef.Name)
		}
	}
	if got, want := strings.Join(refs, " "), "configmap/teatree-config secret/teatree-postgres secret/teatree-s3"; got != want {
		t.Errorf("envFrom = %s, want %s", got, want)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g != 120 {
		t.Errorf("termination grace = %v, want 120", g)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container security context = %+v", sc)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context = %+v", sc)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe = %+v, want GET /readyz", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" {
		t.Errorf("liveness probe = %+v, want GET /livez", p)
	}
	if p := c.StartupProbe; p == nil || p.HTTPGet == nil ||
		time.Duration(p.PeriodSeconds*p.FailureThreshold)*time.Second != Medium.StartupBudget {
		t.Errorf("startup probe = %+v, want a budget of %v", p, Medium.StartupBudget)
	}
	// The rules the manifests in deploy/ are held to.
	if err := deploy.CheckStatefulSet(sts); err != nil {
		t.Error(err)
	}
}

// TestRunnerStatefulSetsPassChecks runs deploy's rules on the
// StatefulSet of every size class.
func TestRunnerStatefulSetsPassChecks(t *testing.T) {
	r := newTestRunner(t, fake.NewClientset(), nil)
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

func TestRunnerEnsureIdempotent(t *testing.T) {
	client := fake.NewClientset()
	r := newTestRunner(t, client, &sizes{m: map[string]string{"sales": "small"}})
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	before := getSTS(t, client, "dbm-sales")
	client.ClearActions()
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("second Ensure did %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	if after := getSTS(t, client, "dbm-sales"); after.ResourceVersion != before.ResourceVersion {
		t.Errorf("resource version changed %s -> %s", before.ResourceVersion, after.ResourceVersion)
	}
}

func TestRunnerSizeClassChange(t *testing.T) {
	client := fake.NewClientset()
	info := &sizes{m: map[string]string{"sales": "small"}}
	r := newTestRunner(t, client, info)
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	before := getSTS(t, client, "dbm-sales")
	info.set("sales", "large")
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	after := getSTS(t, client, "dbm-sales")
	if after.Annotations[AnnotationAppliedHash] == before.Annotations[AnnotationAppliedHash] {
		t.Error("template hash unchanged")
	}
	c := after.Spec.Template.Spec.Containers[0]
	if mem := c.Resources.Limits[corev1.ResourceMemory]; mem.String() != "16Gi" {
		t.Errorf("memory limit = %s, want 16Gi", mem.String())
	}
	if env := envMap(c); env["TEATREE_DUCKDB_THREADS"] != "8" {
		t.Errorf("threads = %s, want 8", env["TEATREE_DUCKDB_THREADS"])
	}
	if after.Labels[LabelSizeClass] != "large" || after.Spec.Template.Labels[LabelSizeClass] != "large" {
		t.Errorf("size class labels = %s, %s, want large", after.Labels[LabelSizeClass], after.Spec.Template.Labels[LabelSizeClass])
	}

	info.set("sales", "huge")
	if err := r.Ensure(t.Context(), "sales"); err == nil || !strings.Contains(err.Error(), "valid classes are") {
		t.Errorf("Ensure with size class huge = %v, want an error listing the classes", err)
	}
}

// runController stands in for the StatefulSet controller: it sets
// status.replicas to spec.replicas, after delay.
func runController(t *testing.T, client kubernetes.Interface, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			list, err := client.AppsV1().StatefulSets(testNS).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, s := range list.Items {
					if s.Spec.Replicas != nil && s.Status.Replicas != *s.Spec.Replicas {
						time.Sleep(delay)
						// The spec as it is now, not as listed before the
						// delay: a Stop during it must not be undone by a
						// stale status.
						cur, err := client.AppsV1().StatefulSets(testNS).Get(ctx, s.Name, metav1.GetOptions{})
						if err != nil || cur.Spec.Replicas == nil {
							continue
						}
						// A patch of the status alone: the fake does not
						// keep an update of the status subresource from
						// overwriting spec with a stale copy.
						patch := fmt.Appendf(nil, `{"status":{"replicas":%d}}`, *cur.Spec.Replicas)
						client.AppsV1().StatefulSets(testNS).Patch(ctx, s.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

func TestRunnerStopRunning(t *testing.T) {
	client := fake.NewClientset()
	runController(t, client, 50*time.Millisecond)
	r := newTestRunner(t, client, &sizes{m: map[string]string{"a": "small", "b_long": "small"}})
	for _, m := range []string{"b_long", "a"} {
		if err := r.Ensure(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(running(t, r), ","); got != "a,b_long" {
		t.Errorf("Running = %s, want a,b_long", got)
	}
	if err := r.Stop(t.Context(), "b_long"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, client, StatefulSetName("b_long"))
	if *sts.Spec.Replicas != 0 || sts.Status.Replicas != 0 {
		t.Errorf("after Stop: spec.replicas %d status.replicas %d, want 0 0", *sts.Spec.Replicas, sts.Status.Replicas)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Error("Stop changed the volume claim templates")
	}
	if got := strings.Join(running(t, r), ","); got != "a" {
		t.Errorf("Running = %s, want a", got)
	}
	// Stopping again, or a model that never ran, is fine.
	if err := r.Stop(t.Context(), "b_long"); err != nil {
		t.Error(err)
	}
	if err := r.Stop(t.Context(), "never"); err != nil {
		t.Error(err)
	}
	// Ensure scales a stopped model back to one replica.
	if err := r.Ensure(t.Context(), "b_long"); err != nil {
		t.Fatal(err)
	}
	if sts := getSTS(t, client, StatefulSetName("b_long")); *sts.Spec.Replicas != 1 {
		t.Errorf("replicas after Ensure = %d, want 1", *sts.Spec.Replicas)
	}
}

func TestRunnerStopTimeout(t *testing.T) {
	client := fake.NewClientset() // no controller: the pod never goes
	r, err := NewRunner(client, nil, Config{Namespace: testNS, Image: "x", StopTimeout: 50 * time.Millisecond, PollInterval: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sts := typed(t, r.StatefulSet("a", Small))
	sts.Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64)
	sts.Status.Replicas = 1
	if _, err := client.AppsV1().StatefulSets(testNS).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(t.Context(), "a"); err == nil {
		t.Error("Stop returned nil while the pod still runs")
	}
}

func TestRunnerNameConflict(t *testing.T) {
	client := fake.NewClientset()
	r := newTestRunner(t, client, nil)
	other := typed(t, r.StatefulSet("a", Small))
	other.Annotations[AnnotationModel] = "someone-else"
	if _, err := client.AppsV1().StatefulSets(testNS).Create(t.Context(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(t.Context(), "a"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Ensure = %v, want ErrNameConflict", err)
	}
	if err := r.Stop(t.Context(), "a"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Stop = %v, want ErrNameConflict", err)
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
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
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

// TestRunnerAppliesAsFieldManager: the StatefulSet is written by a
// server-side apply of FieldManager, and an annotation another manager put
// on the pod template (kubectl rollout restart) survives a template change.
func TestRunnerAppliesAsFieldManager(t *testing.T) {
	client := fake.NewClientset()
	info := &sizes{m: map[string]string{"sales": "small"}}
	r := newTestRunner(t, client, info)
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, client, "dbm-sales")
	var applied bool
	for _, f := range sts.ManagedFields {
		applied = applied || f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationApply
	}
	if !applied {
		t.Fatalf("managed fields %+v: no apply by %s", sts.ManagedFields, FieldManager)
	}
	restart := appsv1ac.StatefulSet("dbm-sales", testNS).WithSpec(appsv1ac.StatefulSetSpec().
		WithTemplate(corev1ac.PodTemplateSpec().WithAnnotations(map[string]string{"kubectl.kubernetes.io/restartedAt": "now"})))
	if _, err := client.AppsV1().StatefulSets(testNS).Apply(t.Context(), restart, metav1.ApplyOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}
	info.set("sales", "large")
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts = getSTS(t, client, "dbm-sales")
	if got := sts.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; got != "now" {
		t.Errorf("another manager's template annotation = %q after Ensure, want it kept", got)
	}
	if mem := sts.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; mem.String() != "16Gi" {
		t.Errorf("memory limit = %s, want 16Gi", mem.String())
	}
}

// TestRunnerKeepsImmutableFields: a StatefulSet made with one volume size
// keeps its volume claim template when the runner's volume size changes
// (the API server refuses to change it), while its pod template follows
// the new configuration.
func TestRunnerKeepsImmutableFields(t *testing.T) {
	client := fake.NewClientset()
	if err := newTestRunner(t, client, nil).Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(client, nil, Config{Namespace: testNS, Image: "ghcr.io/teatree/dbmanager:v2", VolumeSize: resource.MustParse("50Gi"), ServiceName: "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, client, "dbm-sales")
	if q := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "20Gi" {
		t.Errorf("volume size = %s, want the 20Gi it was created with", q.String())
	}
	if sts.Spec.ServiceName != "teatree-dbmanager" {
		t.Errorf("service name = %s, want the one it was created with", sts.Spec.ServiceName)
	}
	if img := sts.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/teatree/dbmanager:v2" {
		t.Errorf("image = %s, want the new one", img)
	}
}

// TestRunnerRunningReturnsAPIErrors: Running reports a failed list, not an
// earlier answer.
func TestRunnerRunningReturnsAPIErrors(t *testing.T) {
	client := fake.NewClientset()
	r := newTestRunner(t, client, nil)
	if err := r.Ensure(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(running(t, r), ","); got != "a" {
		t.Fatalf("Running = %s, want a", got)
	}
	client.PrependReactor("list", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("api server down")
	})
	if models, err := r.Running(t.Context()); err == nil || !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Running = %v, %v while the API server fails, want its error", models, err)
	}
}
