package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/teatree/teatree/deploy"
	"github.com/teatree/teatree/internal/kubetest"
)

// scaleOf reads the scale subresource of a StatefulSet: spec.replicas and
// status.replicas.
func scaleOf(t *testing.T, client kubernetes.Interface, ns, name string) (spec, status int32) {
	t.Helper()
	s, err := client.AppsV1().StatefulSets(ns).GetScale(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.Replicas, s.Status.Replicas
}

// waitPod waits until pod exists and ok accepts it, binding it to the fake
// node when it is not bound (no scheduler runs).
func waitPod(t *testing.T, c *kubetest.Cluster, ns, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, func() bool {
		p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
			_ = c.Bind(t.Context(), ns, name)
			return false
		}
		pod = p
		return ok(p)
	})
	return pod
}

func runningReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// TestRunnerOnAPIServer: the API server accepts the StatefulSet Ensure
// applies (schema, defaulting, admission), the StatefulSet controller makes
// its pod and the ReadWriteOncePod claim from the template, the pod runs
// (kwok), and Stop and Ensure scale it 1 → 0 → 1 through the scale
// subresource, keeping the claim.
func TestRunnerOnAPIServer(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "runner")
	r := newTestRunner(t, c.Client, ns, &sizes{m: map[string]string{"sales": "medium"}})
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, c.Client, ns, "dbm-sales")
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
	if err := deploy.CheckStatefulSet(sts); err != nil {
		t.Error(err)
	}
	if spec, _ := scaleOf(t, c.Client, ns, "dbm-sales"); spec != 1 {
		t.Errorf("scale spec.replicas = %d, want 1", spec)
	}

	pod := waitPod(t, c, ns, "dbm-sales-0", runningReady)
	ctr := pod.Spec.Containers[0]
	if ctr.Image != "ghcr.io/teatree/dbmanager:test" {
		t.Errorf("image = %s", ctr.Image)
	}
	for _, res := range []corev1.ResourceList{ctr.Resources.Requests, ctr.Resources.Limits} {
		if cpu, mem := res[corev1.ResourceCPU], res[corev1.ResourceMemory]; cpu.String() != "4" || mem.String() != "4Gi" {
			t.Errorf("pod resources = cpu %s memory %s, want 4 and 4Gi", cpu.String(), mem.String())
		}
	}
	if pod.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QoS class = %s, want Guaranteed", pod.Status.QOSClass)
	}
	env := envMap(ctr)
	for k, want := range map[string]string{
		"TEATREE_MODEL": "sales", "TEATREE_DATA_DIR": "/data",
		"TEATREE_DUCKDB_THREADS": "4", "TEATREE_DUCKDB_MEMORY_LIMIT": "2816MiB",
		"TEATREE_HEALTH_ADDR": ":8080",
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g != 120 {
		t.Errorf("termination grace = %v, want 120", g)
	}
	var claim string
	for _, v := range pod.Spec.Volumes {
		if v.Name == claimName && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim != "data-dbm-sales-0" {
		t.Fatalf("pod's data volume claims %q, want data-dbm-sales-0", claim)
	}
	pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}) {
		t.Errorf("claim access modes = %v, want [ReadWriteOncePod]", pvc.Spec.AccessModes)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "teatree-model" {
		t.Errorf("claim storage class = %v, want teatree-model", pvc.Spec.StorageClassName)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "20Gi" {
		t.Errorf("claim size = %s, want 20Gi", q.String())
	}
	if got := strings.Join(running(t, r), ","); got != "sales" {
		t.Errorf("Running = %q, want sales", got)
	}

	// 1 → 0: the pod goes (its termination by kwok), the claim stays.
	if err := r.Stop(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	if spec, status := scaleOf(t, c.Client, ns, "dbm-sales"); spec != 0 || status != 0 {
		t.Errorf("scale after Stop = %d/%d, want 0/0", spec, status)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "dbm-sales-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after Stop: %v, want not found", err)
	}
	kept, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
	if err != nil || kept.UID != pvc.UID {
		t.Errorf("claim after Stop: %v, want the same claim kept", err)
	}
	if got := running(t, r); len(got) != 0 {
		t.Errorf("Running = %v after Stop, want none", got)
	}

	// 0 → 1: the same claim again.
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	if spec, _ := scaleOf(t, c.Client, ns, "dbm-sales"); spec != 1 {
		t.Errorf("scale spec.replicas after Ensure = %d, want 1", spec)
	}
	pod = waitPod(t, c, ns, "dbm-sales-0", runningReady)
	if spec, status := scaleOf(t, c.Client, ns, "dbm-sales"); spec != 1 || status != 1 {
		t.Errorf("scale after Ensure = %d/%d, want 1/1", spec, status)
	}
	again, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
	if err != nil || again.UID != pvc.UID {
		t.Errorf("claim after the restart: %v, want the first one", err)
	}
}

// TestRunnerSizeClassChange: a changed size class is applied server-side
// over the running StatefulSet, the controller rolls the pod to the new
// resources, an annotation another field manager set stays, and a second
// Ensure writes nothing.
func TestRunnerSizeClassChange(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "size")
	info := &sizes{m: map[string]string{"sales": "small"}}
	// The runner's requests other than reads are counted.
	var writes atomic.Int64
	cfg := rest.CopyConfig(c.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				writes.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRunner(t, client, ns, info)
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "dbm-sales-0", runningReady)
	before := getSTS(t, c.Client, ns, "dbm-sales")
	// kubectl rollout restart, as its own field manager.
	restart := appsv1ac.StatefulSet("dbm-sales", ns).WithSpec(appsv1ac.StatefulSetSpec().
		WithTemplate(corev1ac.PodTemplateSpec().WithAnnotations(map[string]string{"kubectl.kubernetes.io/restartedAt": "now"})))
	if _, err := c.Client.AppsV1().StatefulSets(ns).Apply(t.Context(), restart, metav1.ApplyOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}

	info.set("sales", "large")
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	after := getSTS(t, c.Client, ns, "dbm-sales")
	if after.Generation <= before.Generation {
		t.Errorf("generation %d -> %d, want it raised", before.Generation, after.Generation)
	}
	if after.Labels[LabelSizeClass] != "large" || after.Spec.Template.Labels[LabelSizeClass] != "large" {
		t.Errorf("size class labels = %s, %s, want large", after.Labels[LabelSizeClass], after.Spec.Template.Labels[LabelSizeClass])
	}
	if got := after.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; got != "now" {
		t.Errorf("kubectl's template annotation = %q after Ensure, want it kept", got)
	}
	var applied bool
	for _, f := range after.ManagedFields {
		applied = applied || f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationApply
	}
	if !applied {
		t.Errorf("managed fields %+v: no apply by %s", after.ManagedFields, FieldManager)
	}
	pod := waitPod(t, c, ns, "dbm-sales-0", func(p *corev1.Pod) bool {
		mem := p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]
		return mem.String() == "16Gi" && runningReady(p)
	})
	if env := envMap(pod.Spec.Containers[0]); env["TEATREE_DUCKDB_THREADS"] != "8" {
		t.Errorf("threads = %s, want 8", env["TEATREE_DUCKDB_THREADS"])
	}

	// Unchanged: no write, only the read.
	writes.Store(0)
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	if n := writes.Load(); n != 0 {
		t.Errorf("%d writes by an Ensure with nothing changed, want none", n)
	}

	info.set("sales", "huge")
	if err := r.Ensure(t.Context(), "sales"); err == nil || !strings.Contains(err.Error(), "valid classes are") {
		t.Errorf("Ensure with size class huge = %v, want an error listing the classes", err)
	}
}

// TestRunnerKeepsImmutableFields: after the runner's volume size and
// service name change, Ensure still succeeds on a StatefulSet made with the
// old ones (the API server refuses to change its volume claim templates:
// shown by a plain apply of the new configuration), and the pod template
// follows the new configuration.
func TestRunnerKeepsImmutableFields(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "immutable")
	if err := newTestRunner(t, c.Client, ns, nil).Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(c.Client, nil, Config{Namespace: ns, Image: "ghcr.io/teatree/dbmanager:v2", VolumeSize: resource.MustParse("50Gi"), ServiceName: "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Client.AppsV1().StatefulSets(ns).Apply(t.Context(), r.StatefulSet("sales", Small), metav1.ApplyOptions{FieldManager: FieldManager, Force: true, DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "forbidden") && !strings.Contains(err.Error(), "immutable") {
		t.Errorf("plain apply of a new volume size = %v, want the API server to refuse it", err)
	}
	if err := r.Ensure(t.Context(), "sales"); err != nil {
		t.Fatal(err)
	}
	sts := getSTS(t, c.Client, ns, "dbm-sales")
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

// TestRunnerTouchesOnlyItsOwn: in a namespace with another application's
// StatefulSet and a StatefulSet named like a model's but not made for it,
// the runner changes neither (ErrNameConflict for the second), lists
// neither as running, and deletes nothing: the claim of a stopped model
// stays.
func TestRunnerTouchesOnlyItsOwn(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "own")
	r := newTestRunner(t, c.Client, ns, nil)
	sets := c.Client.AppsV1().StatefulSets(ns)

	web := typed(t, r.StatefulSet("web", Small))
	web.Name, web.Labels, web.Annotations = "web", map[string]string{"app": "web"}, nil
	web.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	web.Spec.Template.Labels = map[string]string{"app": "web"}
	web.Spec.Replicas = new(int32) // no pod needed
	other := typed(t, r.StatefulSet("a", Small))
	other.Annotations[AnnotationModel] = "someone-else"
	other.Spec.Replicas = new(int32)
	for _, s := range []*appsv1.StatefulSet{web, other} {
		if _, err := sets.Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// What another writer than the StatefulSet controller (which updates
	// the status) would change: the spec (generation), the labels and
	// annotations, the field managers.
	versions := func() map[string]string {
		list, err := sets.List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, s := range list.Items {
			var managers []string
			for _, f := range s.ManagedFields {
				if f.Subresource == "" {
					managers = append(managers, f.Manager+"/"+string(f.Operation))
				}
			}
			m[s.Name] = fmt.Sprintf("generation %d labels %v annotations %v managers %v", s.Generation, s.Labels, s.Annotations, managers)
		}
		return m
	}
	foreign := versions()

	if err := r.Ensure(t.Context(), "a"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Ensure = %v, want ErrNameConflict", err)
	}
	if err := r.Stop(t.Context(), "a"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Stop = %v, want ErrNameConflict", err)
	}
	if err := r.Ensure(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "dbm-b-0", runningReady)
	if got := strings.Join(running(t, r), ","); got != "b" {
		t.Errorf("Running = %q, want b", got)
	}
	if err := r.Stop(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	// Stopping again, or a model that never ran, is fine.
	if err := r.Stop(t.Context(), "b"); err != nil {
		t.Error(err)
	}
	if err := r.Stop(t.Context(), "never"); err != nil {
		t.Error(err)
	}
	now := versions()
	for name, rv := range foreign {
		if now[name] != rv {
			t.Errorf("statefulset %s changed: %s -> %s", name, rv, now[name])
		}
	}
	if _, ok := now["dbm-b"]; !ok || len(now) != 3 {
		t.Errorf("statefulsets after Stop = %v, want web, dbm-a and dbm-b", now)
	}
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), "data-dbm-b-0", metav1.GetOptions{}); err != nil {
		t.Errorf("claim of the stopped model: %v, want it kept", err)
	}
}

// TestRunnerStopWaitsForThePod: a pod whose node does not confirm its end
// (bound to a node without kwok, like a node whose kubelet is gone) keeps
// Stop waiting; Stop fails at its deadline instead of reporting the model
// stopped.
func TestRunnerStopWaitsForThePod(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "stop")
	gone := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gone-" + ns}}
	if _, err := c.Client.CoreV1().Nodes().Create(t.Context(), gone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := newTestRunner(t, c.Client, ns, nil)
	if err := r.Ensure(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitFor(t, func() bool {
		p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "dbm-a-0", metav1.GetOptions{})
		pod = p
		return err == nil
	})
	err := c.Client.CoreV1().Pods(ns).Bind(t.Context(), &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: ns},
		Target:     corev1.ObjectReference{Kind: "Node", Name: gone.Name},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = c.Client.CoreV1().Pods(ns).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := r.Stop(ctx, "a"); err == nil {
		t.Error("Stop returned nil while the pod still terminates")
	}
	if spec, status := scaleOf(t, c.Client, ns, "dbm-a"); spec != 0 || status != 1 {
		t.Errorf("scale = %d/%d, want 0/1 (scaled down, pod still there)", spec, status)
	}
}

// TestRunnerRunningReturnsAPIErrors: Running reports the API server's
// refusal, not an empty list.
func TestRunnerRunningReturnsAPIErrors(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "running")
	nobody, err := c.As("nobody")
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRunner(t, nobody, ns, nil)
	if models, err := r.Running(t.Context()); !apierrors.IsForbidden(err) {
		t.Errorf("Running = %v, %v for a user without rights, want the API server's forbidden error", models, err)
	}
}
