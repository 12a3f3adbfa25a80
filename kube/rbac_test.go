package kube

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/teatree/teatree/internal/kubetest"
)

// dispatcherRBAC installs the Role and RoleBinding of deploy/k8s/base in
// ns with the ServiceAccount they bind, and returns a clientset that acts
// as that ServiceAccount.
func dispatcherRBAC(t *testing.T, c *kubetest.Cluster, ns string) kubernetes.Interface {
	t.Helper()
	data, err := os.ReadFile("../deploy/k8s/base/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var roles, bindings int
	for doc := range bytes.SplitSeq(data, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch o := obj.(type) {
		case *rbacv1.Role:
			o.Namespace = ns
			_, err = c.Client.RbacV1().Roles(ns).Create(t.Context(), o, metav1.CreateOptions{})
			roles++
		case *rbacv1.RoleBinding:
			o.Namespace = ns
			for i := range o.Subjects {
				o.Subjects[i].Namespace = ns // kustomize's namespace
			}
			_, err = c.Client.RbacV1().RoleBindings(ns).Create(t.Context(), o, metav1.CreateOptions{})
			bindings++
		default:
			t.Fatalf("rbac.yaml holds a %T", obj)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if roles != 1 || bindings != 1 {
		t.Fatalf("rbac.yaml holds %d Roles and %d RoleBindings, want 1 and 1", roles, bindings)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "teatree-dispatcher"}}
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client, err := c.As("system:serviceaccount:"+ns+":teatree-dispatcher",
		"system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// TestDispatcherRBAC: the dispatcher's Role from deploy/k8s, bound to its
// ServiceAccount, is enough for everything the dispatcher does (leader
// election; Ensure creating, re-applying after a size class change and
// scaling up; Stop; Running), and a request outside it is forbidden.
func TestDispatcherRBAC(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "rbac")
	client := dispatcherRBAC(t, c, ns)
	info := &sizes{m: map[string]string{"sales": "small"}}
	r := newTestRunner(t, client, ns, info)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWithLeaderElection(ctx, client, ns, "pod-1", testTimings, func(ctx context.Context) error {
			if err := r.Ensure(ctx, "sales"); err != nil {
				return err
			}
			if _, err := c.WaitPodRunning(ctx, ns, "dbm-sales-0", 30*time.Second); err != nil {
				return err
			}
			info.set("sales", "medium")
			if err := r.Ensure(ctx, "sales"); err != nil {
				return err
			}
			if _, err := r.Running(ctx); err != nil {
				return err
			}
			if err := r.Stop(ctx, "sales"); err != nil {
				return err
			}
			if err := r.Ensure(ctx, "sales"); err != nil {
				return err
			}
			time.Sleep(2 * testTimings.retry) // a renewal or two
			cancel()
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the dispatcher's work as its ServiceAccount: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the dispatcher's work did not end within 2 minutes")
	}
	if sts := getSTS(t, c.Client, ns, "dbm-sales"); sts.Labels[LabelSizeClass] != "medium" || *sts.Spec.Replicas != 1 {
		t.Errorf("statefulset: size class %s, %d replicas; want medium, 1", sts.Labels[LabelSizeClass], *sts.Spec.Replicas)
	}

	other := c.Namespace(t, "rbac-other")
	zero := int32(0)
	for what, req := range map[string]func(context.Context) error{
		"list pods": func(ctx context.Context) error {
			_, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err
		},
		"get a secret": func(ctx context.Context) error {
			_, err := client.CoreV1().Secrets(ns).Get(ctx, "teatree-postgres", metav1.GetOptions{})
			return err
		},
		"delete a statefulset": func(ctx context.Context) error {
			return client.AppsV1().StatefulSets(ns).Delete(ctx, "dbm-sales", metav1.DeleteOptions{})
		},
		"update a statefulset": func(ctx context.Context) error {
			sts := getSTS(t, c.Client, ns, "dbm-sales")
			_, err := client.AppsV1().StatefulSets(ns).Update(ctx, sts, metav1.UpdateOptions{})
			return err
		},
		"delete a claim": func(ctx context.Context) error {
			return client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data-dbm-sales-0", metav1.DeleteOptions{})
		},
		"delete the lease": func(ctx context.Context) error {
			return client.CoordinationV1().Leases(ns).Delete(ctx, LeaseName, metav1.DeleteOptions{})
		},
		"create a statefulset in another namespace": func(ctx context.Context) error {
			_, err := client.AppsV1().StatefulSets(other).Create(ctx, &appsv1.StatefulSet{
				ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: appsv1.StatefulSetSpec{
					Replicas: &zero,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
						Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
					},
				},
			}, metav1.CreateOptions{})
			return err
		},
		"list nodes": func(ctx context.Context) error {
			_, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		},
	} {
		if err := req(t.Context()); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the dispatcher: %v, want forbidden", what, err)
		}
	}
}
