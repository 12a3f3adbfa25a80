package deploy_test

// These tests need no cluster: they render every kustomization with the
// kustomize library (the code behind `kubectl kustomize`), decode every
// document strictly into client-go's types (an unknown or duplicate field
// fails, as the API server's strict field validation would), and check
// teatree's rules on the result.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/teatree/teatree/deploy"
)

var overlays = []string{"k8s/overlays/dev", "k8s/overlays/production", "k8s/overlays/monitoring"}

// strict decodes client-go's kinds and refuses unknown and duplicate
// fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// recurringJob is Longhorn's RecurringJob (longhorn.io/v1beta2), the
// fields teatree sets; Longhorn's CRD is not in client-go's scheme.
type recurringJob struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Name        string            `json:"name"`
		Task        string            `json:"task"`
		Cron        string            `json:"cron"`
		Retain      int               `json:"retain"`
		Concurrency int               `json:"concurrency"`
		Groups      []string          `json:"groups"`
		Labels      map[string]string `json:"labels"`
	} `json:"spec"`
}

// render builds the kustomization in dir of fs and strictly decodes every
// document it produces.
func render(fs filesys.FileSystem, dir string) ([]runtime.Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fs, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []runtime.Object
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		obj, err := decode(doc)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// decode strictly decodes one YAML document.
func decode(doc []byte) (runtime.Object, error) {
	if bytes.Contains(doc, []byte("longhorn.io/")) && bytes.Contains(doc, []byte("kind: RecurringJob")) {
		var rj recurringJob
		if err := yaml.UnmarshalStrict(doc, &rj); err != nil {
			return nil, err
		}
		return &unstructuredRecurringJob{rj}, nil
	}
	if bytes.Contains(doc, []byte("monitoring.coreos.com/")) && bytes.Contains(doc, []byte("kind: PodMonitor")) {
		var pm podMonitor
		if err := yaml.UnmarshalStrict(doc, &pm); err != nil {
			return nil, err
		}
		return &pm, nil
	}
	obj, _, err := strict.Decode(doc, nil, nil)
	return obj, err
}

// podMonitor is the part of prometheus-operator's PodMonitor that the
// monitoring overlay uses, decoded strictly (no CRD types in client-go).
type podMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

func (*podMonitor) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (p *podMonitor) DeepCopyObject() runtime.Object {
	c := *p
	return &c
}
func (p *podMonitor) GetNamespace() string { return p.Metadata.Namespace }

// unstructuredRecurringJob lets a recurringJob travel as a runtime.Object.
type unstructuredRecurringJob struct{ recurringJob }

func (*unstructuredRecurringJob) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (j *unstructuredRecurringJob) DeepCopyObject() runtime.Object {
	c := *j
	return &c
}

func renderT(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	objs, err := render(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s renders nothing", dir)
	}
	return objs
}

func all[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the object of type T called name, or nil.
func named[T interface {
	runtime.Object
	GetName() string
}](objs []runtime.Object, name string) T {
	var found T
	for _, o := range all[T](objs) {
		if o.GetName() == name {
			found = o
		}
	}
	return found
}

func TestOverlays(t *testing.T) {
	for _, dir := range overlays {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := renderT(t, dir)
			checkWorkloads(t, objs)
			checkDispatcher(t, objs)
			checkReader(t, objs)
			checkRBAC(t, objs)
			checkNetworkPolicies(t, objs)
			checkConfig(t, objs)
			checkConsole(t, objs)
			for _, o := range objs {
				m, ok := o.(interface{ GetNamespace() string })
				if _, isNS := o.(*corev1.Namespace); ok && !isNS && m.GetNamespace() != "teatree" {
					t.Errorf("%T in namespace %q, want teatree", o, m.GetNamespace())
				}
			}
		})
	}
}

func checkWorkloads(t *testing.T, objs []runtime.Object) {
	t.Helper()
	for _, d := range all[*appsv1.Deployment](objs) {
		if err := deploy.CheckDeployment(d); err != nil {
			t.Error(err)
		}
	}
	for _, s := range all[*appsv1.StatefulSet](objs) {
		if err := deploy.CheckStatefulSet(s); err != nil {
			t.Error(err)
		}
	}
	jobs := all[*batchv1.Job](objs)
	for _, j := range jobs {
		if err := deploy.CheckPodSpec(&j.Spec.Template.Spec); err != nil {
			t.Errorf("job %s: %v", j.Name, err)
		}
	}
	if len(jobs) != 1 || jobs[0].Name != "teatree-migrate" || !slices.Equal(jobs[0].Spec.Template.Spec.Containers[0].Args, []string{"migrate"}) {
		t.Errorf("want one Job teatree-migrate running `teactl migrate`, got %d jobs", len(jobs))
	}
	for _, ns := range all[*corev1.Namespace](objs) {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s does not enforce the restricted pod security standard", ns.Name)
		}
	}
}

// checkReader: the readers run as a Deployment of a pinned image, with
// no API server token.
func checkReader(t *testing.T, objs []runtime.Object) {
	t.Helper()
	d := named[*appsv1.Deployment](objs, "teatree-reader")
	if d == nil {
		t.Fatal("no Deployment teatree-reader")
	}
	spec := d.Spec.Template.Spec
	if img := spec.Containers[0].Image; strings.HasSuffix(img, ":latest") {
		t.Errorf("reader image %s is not pinned", img)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("reader pods mount a service account token")
	}
}

func checkDispatcher(t *testing.T, objs []runtime.Object) {
	t.Helper()
	d := named[*appsv1.Deployment](objs, "teatree-dispatcher")
	if d == nil {
		t.Fatal("no Deployment teatree-dispatcher")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("dispatcher replicas = %v, want 2", d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"--mode", "kubernetes"}) {
		t.Errorf("dispatcher args = %q, want --mode kubernetes", c.Args)
	}
	if strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("dispatcher image %s is not pinned", c.Image)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if img := env["TEATREE_DBMANAGER_IMAGE"]; img == "" || strings.HasSuffix(img, ":latest") {
		t.Errorf("TEATREE_DBMANAGER_IMAGE = %q, want a pinned image", img)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "teatree-dispatcher" {
		t.Errorf("dispatcher service account = %q", d.Spec.Template.Spec.ServiceAccountName)
	}
	pdbs := all[*policyv1.PodDisruptionBudget](objs)
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	pdb := pdbs[0]
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("PDB selector %s=%s does not select the dispatcher pods", k, v)
		}
	}
}

func checkRBAC(t *testing.T, objs []runtime.Object) {
	t.Helper()
	if n := len(all[*rbacv1.ClusterRole](objs)) + len(all[*rbacv1.ClusterRoleBinding](objs)); n > 0 {
		t.Errorf("%d cluster-wide RBAC objects, want none", n)
	}
	roles := all[*rbacv1.Role](objs)
	if len(roles) != 1 {
		t.Fatalf("%d Roles, want 1", len(roles))
	}
	got := map[string][]string{}
	for _, r := range roles[0].Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := g + "/" + res
				got[key] = append(got[key], r.Verbs...)
			}
		}
	}
	want := map[string][]string{
		"apps/statefulsets":          {"create", "get", "list", "patch", "watch"},
		"apps/statefulsets/scale":    {"patch"},
		"coordination.k8s.io/leases": {"create", "get", "update"},
	}
	for k := range got {
		slices.Sort(got[k])
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dispatcher RBAC = %v, want %v", got, want)
	}
	bindings := all[*rbacv1.RoleBinding](objs)
	if len(bindings) != 1 || bindings[0].RoleRef.Name != roles[0].Name ||
		len(bindings[0].Subjects) != 1 || bindings[0].Subjects[0].Name != "teatree-dispatcher" {
		t.Errorf("want one RoleBinding of Role %s to ServiceAccount teatree-dispatcher", roles[0].Name)
	}
	for _, sa := range all[*corev1.ServiceAccount](objs) {
		if sa.Name == "teatree-dbmanager" && (sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
			t.Error("ServiceAccount teatree-dbmanager mounts its token")
		}
	}
}

func checkNetworkPolicies(t *testing.T, objs []runtime.Object) {
	t.Helper()
	var denyAll bool
	ports := map[string]bool{}
	for _, np := range all[*networkingv1.NetworkPolicy](objs) {
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			denyAll = true
		}
		if np.Name != "teatree-egress" {
			continue
		}
		if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/part-of"] != "teatree" {
			t.Errorf("teatree-egress selects %v", np.Spec.PodSelector.MatchLabels)
		}
		for _, rule := range np.Spec.Egress {
			for _, p := range rule.Ports {
				ports[fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String())] = true
			}
		}
	}
	if !denyAll {
		t.Error("no default-deny NetworkPolicy for ingress and egress")
	}
	for _, p := range []string{"UDP/53", "TCP/53", "TCP/4222", "TCP/5432", "TCP/443"} {
		if !ports[p] {
			t.Errorf("teatree-egress does not allow %s (have %v)", p, ports)
		}
	}
}

// checkConsole: the dispatcher serves the console behind a Service that
// selects it, only the console clients may reach that port, and
// Prometheus is told where /metrics is.
func checkConsole(t *testing.T, objs []runtime.Object) {
	t.Helper()
	d := named[*appsv1.Deployment](objs, "teatree-dispatcher")
	svc := named[*corev1.Service](objs, "teatree-console")
	if d == nil || svc == nil {
		t.Fatal("no Deployment teatree-dispatcher or Service teatree-console")
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service teatree-console selector %s=%s does not select the dispatcher pods", k, v)
		}
	}
	env := map[string]string{}
	ports := map[string]int32{}
	c := d.Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if env["TEATREE_CONSOLE_ADDR"] != fmt.Sprintf(":%d", ports["console"]) || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "console" {
		t.Errorf("console: TEATREE_CONSOLE_ADDR %q, container port %d, service ports %v do not line up", env["TEATREE_CONSOLE_ADDR"], ports["console"], svc.Spec.Ports)
	}
	a := d.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" || a["prometheus.io/port"] != fmt.Sprint(ports["health"]) {
		t.Errorf("dispatcher pod annotations %v do not point Prometheus at /metrics on the health port", a)
	}
	np := named[*networkingv1.NetworkPolicy](objs, "teatree-console")
	if np == nil || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil ||
		len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != int(ports["console"]) {
		t.Errorf("NetworkPolicy teatree-console must let only selected pods reach port %d", ports["console"])
	}
}

func checkConfig(t *testing.T, objs []runtime.Object) {
	t.Helper()
	cm := named[*corev1.ConfigMap](objs, "teatree-config")
	if cm == nil {
		t.Fatal("no ConfigMap teatree-config (its name must not get a hash suffix)")
	}
	for _, k := range []string{"TEATREE_NATS_URL", "TEATREE_STORE_URL"} {
		if cm.Data[k] == "" {
			t.Errorf("teatree-config has no %s", k)
		}
	}
	// Generated Secrets keep their names: the dispatcher's StatefulSets
	// refer to them by name.
	for _, s := range all[*corev1.Secret](objs) {
		if !slices.Contains([]string{"teatree-postgres", "teatree-s3", "teatree-nats-creds"}, s.Name) {
			t.Errorf("unexpected Secret %s", s.Name)
		}
	}
}

func TestLonghorn(t *testing.T) {
	objs := renderT(t, "longhorn")
	scs := all[*storagev1.StorageClass](objs)
	if len(scs) != 1 {
		t.Fatalf("%d StorageClasses, want 1", len(scs))
	}
	sc := scs[0]
	if sc.Name != deploy.ModelStorageClass || sc.Provisioner != "driver.longhorn.io" {
		t.Errorf("StorageClass %s (%s), want %s (driver.longhorn.io)", sc.Name, sc.Provisioner, deploy.ModelStorageClass)
	}
	if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("reclaimPolicy = %v, want Retain", sc.ReclaimPolicy)
	}
	if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
		t.Error("allowVolumeExpansion is not true")
	}
	for k, want := range map[string]string{
		"numberOfReplicas":    "3",
		"fsType":              "ext4",
		"dataLocality":        "best-effort",
		"staleReplicaTimeout": "2880",
	} {
		if got := sc.Parameters[k]; got != want {
			t.Errorf("parameter %s = %q, want %q", k, got, want)
		}
	}
	var jobs []*unstructuredRecurringJob
	for _, o := range objs {
		if j, ok := o.(*unstructuredRecurringJob); ok {
			jobs = append(jobs, j)
		}
	}
	tasks := map[string]bool{}
	for _, j := range jobs {
		if j.APIVersion != "longhorn.io/v1beta2" || j.Metadata.Namespace != "longhorn-system" {
			t.Errorf("RecurringJob %s: %s in %s", j.Metadata.Name, j.APIVersion, j.Metadata.Namespace)
		}
		if !slices.Contains(j.Spec.Groups, "teatree-model") || j.Spec.Retain < 1 || len(strings.Fields(j.Spec.Cron)) != 5 {
			t.Errorf("RecurringJob %s: %+v", j.Metadata.Name, j.Spec)
		}
		tasks[j.Spec.Task] = true
	}
	if !tasks["snapshot"] || !tasks["backup"] {
		t.Errorf("recurring job tasks %v, want snapshot and backup", tasks)
	}
	if !strings.Contains(sc.Parameters["recurringJobSelector"], `"name":"teatree-model","isGroup":true`) {
		t.Errorf("recurringJobSelector = %s, want the group teatree-model", sc.Parameters["recurringJobSelector"])
	}
}

// TestStorageClassParametersCommented checks that every parameter of the
// StorageClass, and every setting beside them, says why it is set: a
// comment right above it.
func TestStorageClassParametersCommented(t *testing.T) {
	f, err := os.Open("longhorn/storageclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := []string{"allowVolumeExpansion", "reclaimPolicy", "volumeBindingMode"}
	sc := bufio.NewScanner(f)
	var prev string
	inParams := false
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		key, _, _ := strings.Cut(trimmed, ":")
		topLevel := !strings.HasPrefix(line, " ")
		switch {
		case strings.HasPrefix(trimmed, "#"):
		case topLevel:
			inParams = line == "parameters:"
			if slices.Contains(settings, key) && !strings.HasPrefix(prev, "#") {
				t.Errorf("%s has no comment above it", key)
			}
		case inParams && !strings.HasPrefix(prev, "#"):
			t.Errorf("parameter %s has no comment above it", key)
		}
		prev = trimmed
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestStrictDecodingRejectsMistakes shows that a misspelled or duplicated
// field fails the render-and-decode pipeline instead of being dropped.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	const kustomization = "resources:\n- d.yaml\n"
	for name, doc := range map[string]string{
		"misspelled field": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i}]
`,
		"misspelled nested field": `apiVersion: v1
kind: Pod
metadata:
  name: x
spec:
  containers:
  - name: c
    image: i
    securityContext:
      readOnlyRootFileSystem: true
`,
		"duplicate field": `apiVersion: v1
kind: ConfigMap
metadata:
  name: x
  name: y
`,
	} {
		t.Run(name, func(t *testing.T) {
			fs := filesys.MakeFsInMemory()
			if err := fs.WriteFile("/k/kustomization.yaml", []byte(kustomization)); err != nil {
				t.Fatal(err)
			}
			if err := fs.WriteFile("/k/d.yaml", []byte(doc)); err != nil {
				t.Fatal(err)
			}
			if _, err := render(fs, "/k"); err == nil {
				t.Error("rendered and decoded without an error")
			} else {
				t.Log(err)
			}
		})
	}
	// The correctly spelled document passes, so the failures above are
	// about the mistakes.
	fs := filesys.MakeFsInMemory()
	fs.WriteFile("/k/kustomization.yaml", []byte(kustomization))
	fs.WriteFile("/k/d.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"))
	if _, err := render(fs, "/k"); err != nil {
		t.Error(err)
	}
}

// TestSourcesStrict decodes every YAML source file (resources and
// patches) on its own, so a mistake in a patch that a render would drop
// is caught too.
func TestSourcesStrict(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" || d.Name() == "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if _, err := decode(doc); err != nil {
				t.Errorf("%s, document %d: %v", path, i+1, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMonitoringOverlay: the PodMonitor scrapes /metrics on the health
// port of the dispatcher pods (and, by the same label, the db-managers').
func TestMonitoringOverlay(t *testing.T) {
	objs := renderT(t, "k8s/overlays/monitoring")
	pms := all[*podMonitor](objs)
	d := named[*appsv1.Deployment](objs, "teatree-dispatcher")
	if len(pms) != 1 || d == nil {
		t.Fatalf("%d PodMonitors and dispatcher %v, want one of each", len(pms), d != nil)
	}
	pm := pms[0]
	for k, v := range pm.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("PodMonitor selector %s=%s does not select the dispatcher pods", k, v)
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != "health" || pm.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
		t.Errorf("PodMonitor endpoints %+v, want /metrics on port health", pm.Spec.PodMetricsEndpoints)
	}
	if pm.Metadata.Namespace != "teatree" {
		t.Errorf("PodMonitor in namespace %q", pm.Metadata.Namespace)
	}
}
