// Package deploy holds teatree's Kubernetes manifests (k8s/, a kustomize
// base and overlays; longhorn/, the StorageClass and recurring jobs of the
// model volumes) and the rules every teatree workload is held to. The
// rules run on the rendered manifests (deploy_test.go) and on the
// StatefulSets the dispatcher builds (package kube).
package deploy

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// ModelStorageClass is the StorageClass of the model volumes
// (longhorn/storageclass.yaml).
const ModelStorageClass = "teatree-model"

// CheckPodSpec checks the rules for every teatree pod: it runs as non-root
// with seccomp RuntimeDefault, and every container (init containers too)
// has a read-only root filesystem, no privilege escalation, all
// capabilities dropped, and CPU and memory requests and a memory limit.
func CheckPodSpec(spec *corev1.PodSpec) error {
	var errs []error
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	if len(spec.Containers) == 0 {
		errs = append(errs, errors.New("no containers"))
	}
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("container %s: "+format, append([]any{c.Name}, args...)...))
		}
		if !isTrue(sc.RunAsNonRoot) && !(sc.RunAsNonRoot == nil && isTrue(psc.RunAsNonRoot)) {
			fail("runAsNonRoot is not true")
		}
		if uid := sc.RunAsUser; uid != nil && *uid == 0 || uid == nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
			fail("runs as uid 0")
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = psc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			fail("seccomp profile is not RuntimeDefault")
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			fail("root filesystem is not read-only")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("allowPrivilegeEscalation is not false")
		}
		if isTrue(sc.Privileged) {
			fail("privileged")
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
			fail("capabilities are not drop [ALL], add none")
		}
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[name]; !ok {
				fail("no %s request", name)
			}
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			fail("no memory limit")
		}
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		errs = append(errs, errors.New("uses a host namespace"))
	}
	return errors.Join(errs...)
}

// checkServing checks that every container of a long-running pod has
// liveness and readiness probes.
func checkServing(spec *corev1.PodSpec) error {
	var errs []error
	for _, c := range spec.Containers {
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			errs = append(errs, fmt.Errorf("container %s: no liveness or readiness probe", c.Name))
		}
	}
	return errors.Join(errs...)
}

// CheckDeployment checks d's pod template with CheckPodSpec and that its
// containers have liveness and readiness probes.
func CheckDeployment(d *appsv1.Deployment) error {
	return wrap("deployment", d.Name, errors.Join(CheckPodSpec(&d.Spec.Template.Spec), checkServing(&d.Spec.Template.Spec)))
}

// CheckStatefulSet checks a db-manager StatefulSet: the pod rules of
// CheckPodSpec, liveness, readiness and startup probes, requests equal to
// limits (Guaranteed QoS), at most one replica, and volume claims that are
// ReadWriteOncePod on ModelStorageClass and retained when the StatefulSet
// is scaled down or deleted.
func CheckStatefulSet(s *appsv1.StatefulSet) error {
	spec := &s.Spec.Template.Spec
	errs := []error{CheckPodSpec(spec), checkServing(spec)}
	for _, c := range spec.Containers {
		if c.StartupProbe == nil {
			errs = append(errs, fmt.Errorf("container %s: no startup probe", c.Name))
		}
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[name], c.Resources.Limits[name]
			if req.Cmp(lim) != 0 {
				errs = append(errs, fmt.Errorf("container %s: %s request %s != limit %s", c.Name, name, req.String(), lim.String()))
			}
		}
	}
	if r := s.Spec.Replicas; r != nil && *r > 1 {
		errs = append(errs, fmt.Errorf("%d replicas: a model has one writer", *r))
	}
	if len(s.Spec.VolumeClaimTemplates) == 0 {
		errs = append(errs, errors.New("no volume claim template"))
	}
	for _, pvc := range s.Spec.VolumeClaimTemplates {
		if len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOncePod {
			errs = append(errs, fmt.Errorf("claim %s: access modes %v, want [ReadWriteOncePod]", pvc.Name, pvc.Spec.AccessModes))
		}
		if sc := pvc.Spec.StorageClassName; sc == nil || *sc != ModelStorageClass {
			errs = append(errs, fmt.Errorf("claim %s: storage class is not %s", pvc.Name, ModelStorageClass))
		}
	}
	p := s.Spec.PersistentVolumeClaimRetentionPolicy
	if p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		errs = append(errs, errors.New("volume claims are not retained when scaled down and deleted"))
	}
	return wrap("statefulset", s.Name, errors.Join(errs...))
}

func wrap(kind, name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("deploy: %s %s: %w", kind, name, err)
}

func isTrue(b *bool) bool { return b != nil && *b }
