package deploy_test

// TestManifestsOnAPIServer applies every rendered object to a real
// kube-apiserver (internal/kubetest), which checks what strict decoding
// cannot: validation, defaulting, admission (PodSecurity included) and
// server-side apply. It skips when the control plane's binaries were never
// built (scripts/k8s-test-bins.sh).

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/teatree/teatree/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// thirdPartyCRDs stand in for the CRDs of Longhorn (RecurringJob) and
// prometheus-operator (PodMonitor), installed separately on a real
// cluster. Their schemas keep unknown fields: the API server checks the
// objects' kind, version, scope and metadata; their fields are checked by
// the strict decoding of deploy_test.go.
var thirdPartyCRDs = []string{`
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: recurringjobs.longhorn.io}
spec:
  group: longhorn.io
  scope: Namespaced
  names: {kind: RecurringJob, plural: recurringjobs, singular: recurringjob, listKind: RecurringJobList}
  versions:
    - name: v1beta2
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`}

// applier applies unstructured objects server-side.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, c *kubetest.Cluster) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (a *applier) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

// apply applies obj as field manager "deploy-test" with strict field
// validation, as a dry run or for real.
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	res, err := a.resource(obj)
	if err != nil {
		return err
	}
	body, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "deploy-test", Force: new(true), FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = res.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, opts)
	return err
}

// remove deletes obj and waits until it is gone.
func (a *applier) remove(ctx context.Context, obj *unstructured.Unstructured) error {
	res, err := a.resource(obj)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	if err := res.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// renderObjects builds the kustomization in dir into unstructured objects,
// in kustomize's order (namespaces first).
func renderObjects(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		// Through JSON: the numbers of an unstructured object are int64.
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var o unstructured.Unstructured
		if err := o.UnmarshalJSON(b); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &o)
	}
	if len(objs) == 0 {
		t.Fatalf("%s renders nothing", dir)
	}
	return objs
}

func TestManifestsOnAPIServer(t *testing.T) {
	c := kubetest.Shared(t)
	a := newApplier(t, c)
	ctx := t.Context()
	for _, doc := range thirdPartyCRDs {
		var crd unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &crd.Object); err != nil {
			t.Fatal(err)
		}
		if err := a.apply(ctx, &crd, false); err != nil {
			t.Fatalf("CRD %s: %v", crd.GetName(), err)
		}
	}
	// Longhorn's namespace, made by its installation.
	longhornNS := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "longhorn-system"}}}
	if err := a.apply(ctx, longhornNS, false); err != nil {
		t.Fatal(err)
	}
	// Each kustomization in turn on the same cluster; the objects of one
	// are deleted before the next (the migration Job's template cannot
	// change), its namespace is kept.
	for _, dir := range append(append([]string{"k8s/base"}, overlays...), "longhorn") {
		t.Run(strings.ReplaceAll(dir, "/", "_"), func(t *testing.T) {
			objs := renderObjects(t, dir)
			var applied []*unstructured.Unstructured
			for _, o := range objs {
				what := o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
				if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
					err := a.apply(ctx, o, true)
					// A CRD's kind is served a moment after it is created.
					return !meta.IsNoMatchError(err), err
				}); err != nil {
					t.Errorf("%s: server-side dry run refused: %v", what, err)
					continue
				}
				if err := a.apply(ctx, o, false); err != nil {
					t.Errorf("%s: server-side apply refused: %v", what, err)
					continue
				}
				applied = append(applied, o)
			}
			t.Logf("%s: %d objects applied", dir, len(applied))
			slices.Reverse(applied)
			for _, o := range applied {
				if o.GetKind() == "Namespace" {
					continue
				}
				if err := a.remove(ctx, o); err != nil {
					t.Errorf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

// TestAPIServerRefusesBrokenManifests: the same applies fail with the API
// server's message for an object with a misspelt field, a negative replica
// count, and a privileged container that also forbids privilege
// escalation.
func TestAPIServerRefusesBrokenManifests(t *testing.T) {
	c := kubetest.Shared(t)
	a := newApplier(t, c)
	objs := renderObjects(t, "k8s/overlays/production")
	var ns, dispatcher *unstructured.Unstructured
	for _, o := range objs {
		switch {
		case o.GetKind() == "Namespace":
			ns = o
		case o.GetKind() == "Deployment" && o.GetName() == "teatree-dispatcher":
			dispatcher = o
		}
	}
	if ns == nil || dispatcher == nil {
		t.Fatal("production renders no namespace or no dispatcher Deployment")
	}
	if err := a.apply(t.Context(), ns, false); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(o *unstructured.Unstructured){
		"unknown field": func(o *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(o.Object, int64(2), "spec", "replica")
		},
		"invalid value": func(o *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(o.Object, int64(-1), "spec", "replicas")
		},
		"privileged without privilege escalation": func(o *unstructured.Unstructured) {
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			cs[0].(map[string]any)["securityContext"].(map[string]any)["privileged"] = true
			_ = unstructured.SetNestedSlice(o.Object, cs, "spec", "template", "spec", "containers")
		},
	} {
		o := dispatcher.DeepCopy()
		edit(o)
		err := a.apply(t.Context(), o, true)
		if err == nil {
			t.Errorf("%s: dry run accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}
