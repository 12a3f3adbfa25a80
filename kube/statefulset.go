package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// StatefulSet returns the apply configuration of the StatefulSet that runs
// the db-manager of model in class, with one replica: every field the
// dispatcher owns, and AnnotationAppliedHash, a hash of all of them.
func (r *Runner) StatefulSet(model string, class SizeClass) *appsv1ac.StatefulSetApplyConfiguration {
	name := StatefulSetName(model)
	selector := map[string]string{
		LabelName:      "teatree",
		LabelComponent: "db-manager",
		LabelInstance:  name,
	}
	labels := map[string]string{
		LabelPartOf:    "teatree",
		LabelManagedBy: FieldManager,
		LabelModel:     modelLabel(model),
		LabelSizeClass: class.Name,
	}
	maps.Copy(labels, selector)
	claimLabels := maps.Clone(labels)
	delete(claimLabels, LabelSizeClass)
	sts := appsv1ac.StatefulSet(name, r.cfg.Namespace).
		WithLabels(labels).
		WithAnnotations(map[string]string{AnnotationModel: model}).
		WithSpec(appsv1ac.StatefulSetSpec().
			WithReplicas(1).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithServiceName(r.cfg.ServiceName).
			WithTemplate(r.podTemplate(model, class, labels)).
			// One pod at a time, the old one gone before the new one
			// starts: the volume is ReadWriteOncePod anyway.
			WithPodManagementPolicy(appsv1.OrderedReadyPodManagement).
			WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().WithType(appsv1.RollingUpdateStatefulSetStrategyType)).
			// The model's DuckDB file must outlive both a scale to zero
			// and a deleted StatefulSet.
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(appsv1.RetainPersistentVolumeClaimRetentionPolicyType).
				WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
			WithVolumeClaimTemplates((&corev1ac.PersistentVolumeClaimApplyConfiguration{}).WithName(claimName).
				WithLabels(claimLabels).
				WithSpec(corev1ac.PersistentVolumeClaimSpec().
					// One writer: the kubelet refuses a second pod on
					// the volume, on any node.
					WithAccessModes(corev1.ReadWriteOncePod).
					WithStorageClassName(r.cfg.StorageClass).
					WithResources(corev1ac.VolumeResourceRequirements().
						WithRequests(corev1.ResourceList{corev1.ResourceStorage: r.cfg.VolumeSize})))))
	sts.Annotations[AnnotationAppliedHash] = appliedHash(sts)
	return sts
}

func (r *Runner) podTemplate(model string, class SizeClass, labels map[string]string) *corev1ac.PodTemplateSpecApplyConfiguration {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    class.CPUQuantity(),
		corev1.ResourceMemory: class.MemoryQuantity(),
	}
	env := []*corev1ac.EnvVarApplyConfiguration{
		envVar("TEATREE_MODEL", model),
		envVar("TEATREE_DATA_DIR", DataDir),
		envVar("TEATREE_DUCKDB_THREADS", strconv.FormatInt(class.DuckDBThreads(), 10)),
		envVar("TEATREE_DUCKDB_MEMORY_LIMIT", class.DuckDBMemoryLimit()),
		envVar("TEATREE_HEALTH_ADDR", ":"+strconv.Itoa(HealthPort)),
		// The Go runtime keeps its heap below the pod's limit and its
		// threads to the CPU quota.
		envVar("GOMEMLIMIT", fmt.Sprintf("%dMiB", class.MemoryMiB-class.DuckDBMemoryLimitMiB()-64)),
		envVar("GOMAXPROCS", strconv.FormatInt(class.CPU, 10)),
	}
	var envFrom []*corev1ac.EnvFromSourceApplyConfiguration
	for _, cm := range r.cfg.ConfigMaps {
		envFrom = append(envFrom, corev1ac.EnvFromSource().WithConfigMapRef(corev1ac.ConfigMapEnvSource().WithName(cm)))
	}
	for _, s := range r.cfg.Secrets {
		envFrom = append(envFrom, corev1ac.EnvFromSource().WithSecretRef(corev1ac.SecretEnvSource().WithName(s)))
	}
	volumes := []*corev1ac.VolumeApplyConfiguration{
		// Go's and DuckDB's scratch files outside the data directory;
		// the root filesystem is read-only.
		corev1ac.Volume().WithName("tmp").WithEmptyDir(corev1ac.EmptyDirVolumeSource().WithSizeLimit(resource.MustParse("1Gi"))),
	}
	mounts := []*corev1ac.VolumeMountApplyConfiguration{
		corev1ac.VolumeMount().WithName(claimName).WithMountPath(DataDir),
		corev1ac.VolumeMount().WithName("tmp").WithMountPath("/tmp"),
	}
	if r.cfg.NATSCredsSecret != "-" {
		volumes = append(volumes, corev1ac.Volume().WithName("nats-creds").
			WithSecret(corev1ac.SecretVolumeSource().WithSecretName(r.cfg.NATSCredsSecret).WithOptional(true).WithDefaultMode(0o440)))
		mounts = append(mounts, corev1ac.VolumeMount().WithName("nats-creds").WithMountPath(natsCredsDir).WithReadOnly(true))
		env = append(env, envVar("TEATREE_NATS_CREDS", natsCredsDir+"/nats.creds"))
	}
	for _, e := range r.cfg.Env {
		env = append(env, envVarFrom(e))
	}
	health := func(path string, period, timeout, failures int32) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromString("health")).WithScheme(corev1.URISchemeHTTP)).
			WithPeriodSeconds(period).WithTimeoutSeconds(timeout).WithFailureThreshold(failures).WithSuccessThreshold(1)
	}
	container := corev1ac.Container().
		WithName("db-manager").
		WithImage(r.cfg.Image).
		WithImagePullPolicy(r.cfg.ImagePullPolicy).
		WithEnv(env...).
		WithEnvFrom(envFrom...).
		WithPorts(corev1ac.ContainerPort().WithName("health").WithContainerPort(HealthPort).WithProtocol(corev1.ProtocolTCP)).
		WithResources(corev1ac.ResourceRequirements().WithRequests(resources).WithLimits(resources)).
		WithVolumeMounts(mounts...).
		// /livez answers as soon as the process runs and the volume is
		// writable; the budget covers a slow volume attach and a process
		// that cannot start its health server before opening the model.
		WithStartupProbe(health("/livez", 10, 5, int32(class.StartupBudget/(10*time.Second)))).
		// Ready: the writer lease is held and the consumer bound (WAL
		// replay done).
		WithReadinessProbe(health("/readyz", 5, 3, 3)).
		// Alive: a small file on the data volume can be written and
		// fsynced (catches a volume remounted read-only).
		WithLivenessProbe(health("/livez", 10, 5, 6)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).
			WithReadOnlyRootFilesystem(true).
			WithAllowPrivilegeEscalation(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithTerminationMessagePolicy(corev1.TerminationMessageFallbackToLogsOnError)
	return corev1ac.PodTemplateSpec().
		WithLabels(labels).
		// Prometheus scrapes /metrics on the health port.
		WithAnnotations(map[string]string{
			"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(HealthPort), "prometheus.io/path": "/metrics",
		}).
		WithSpec(corev1ac.PodSpec().
			WithServiceAccountName(r.cfg.ServiceAccount).
			WithAutomountServiceAccountToken(false).
			WithEnableServiceLinks(false).
			WithTerminationGracePeriodSeconds(int64(class.TerminationGrace / time.Second)).
			WithSecurityContext(corev1ac.PodSecurityContext().
				WithRunAsNonRoot(true).
				WithRunAsUser(65532).
				WithRunAsGroup(65532).
				// The volume is writable by the pod's group; chown only a
				// fresh volume, not every file of a big one at each start.
				WithFSGroup(65532).
				WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
				WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
			WithContainers(container).
			WithVolumes(volumes...))
}

func envVar(name, value string) *corev1ac.EnvVarApplyConfiguration {
	return corev1ac.EnvVar().WithName(name).WithValue(value)
}

// envVarFrom converts a variable of Config.Env, whose value may come from
// a reference (valueFrom).
func envVarFrom(e corev1.EnvVar) *corev1ac.EnvVarApplyConfiguration {
	out := corev1ac.EnvVar().WithName(e.Name)
	if e.Value != "" {
		out.WithValue(e.Value)
	}
	if e.ValueFrom != nil {
		var src corev1ac.EnvVarSourceApplyConfiguration
		b, err := json.Marshal(e.ValueFrom)
		if err == nil && json.Unmarshal(b, &src) == nil {
			out.WithValueFrom(&src)
		}
	}
	return out
}

// appliedHash is a short hash of the JSON form of sts.
func appliedHash(sts *appsv1ac.StatefulSetApplyConfiguration) string {
	b, err := json.Marshal(sts)
	if err != nil {
		panic(err) // an apply configuration of plain values always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
