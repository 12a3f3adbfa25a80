package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"
)

// ModelInfo looks up the settings of a model in the control tables.
type ModelInfo interface {
	// SizeClass returns the size class name of model (goal_model.size_class);
	// "" means DefaultSizeClass.
	SizeClass(ctx context.Context, model string) (string, error)
}

// Labels and annotations on the objects a KubeRunner manages.
const (
	LabelName      = "app.kubernetes.io/name"       // always "teatree"
	LabelComponent = "app.kubernetes.io/component"  // always "db-manager"
	LabelInstance  = "app.kubernetes.io/instance"   // the StatefulSet's name
	LabelPartOf    = "app.kubernetes.io/part-of"    // always "teatree"
	LabelManagedBy = "app.kubernetes.io/managed-by" // always "teatree-dispatcher"
	LabelSizeClass = "teatree.io/size-class"        // the size class name
	// LabelModel is the model id or, for an id that is not a valid label
	// value, the StatefulSet name without "dbm-" and leading '-'.
	LabelModel = "teatree.io/model"

	// AnnotationModel holds the exact model id: label values are limited
	// to 63 characters.
	AnnotationModel = "teatree.io/model"
	// AnnotationTemplate is a hash of the pod template the dispatcher
	// built; a different hash means the template must be updated.
	AnnotationTemplate = "teatree.io/template-hash"
)

// Fixed names and ports inside a db-manager pod.
const (
	// DataDir is where the model's volume is mounted (TEATREE_DATA_DIR).
	DataDir = "/data"
	// HealthPort is the db-manager's /livez and /readyz port.
	HealthPort = 8080
	// natsCredsDir is where the NATS credentials Secret is mounted.
	natsCredsDir = "/etc/teatree/nats"
	// maxStatefulSetName is the longest StatefulSet name: the controller
	// adds "-" and a 10-character hash to it in the pods'
	// controller-revision-hash label, whose value may have 63 characters.
	maxStatefulSetName = 52
	// claimName is the name of the volume claim template; the PVC of
	// model m is "data-<StatefulSetName(m)>-0".
	claimName = "data"
)

// ErrNameConflict is returned by Ensure and Stop when the StatefulSet named
// for a model belongs to another model (a hash collision of two long
// model ids, or a StatefulSet not made by teatree).
var ErrNameConflict = errors.New("dispatcher: statefulset belongs to another model")

// KubeConfig configures a KubeRunner. Defaults are written next to each
// field.
type KubeConfig struct {
	// Namespace of the StatefulSets; required ($TEATREE_NAMESPACE, from
	// the downward API in deploy/k8s).
	Namespace string
	// Image of the db-manager; required.
	Image string
	// ImagePullPolicy of the db-manager; default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// StorageClass of the model volumes; default "teatree-model"
	// (deploy/longhorn).
	StorageClass string
	// VolumeSize is the initial size of a model volume; default 20Gi.
	// Volume claim templates cannot change, so a volume is grown by
	// editing its PVC (the StorageClass allows expansion).
	VolumeSize resource.Quantity
	// ServiceAccount of the db-manager pods; default "teatree-dbmanager".
	// Its token is not mounted: a db-manager never talks to the API.
	ServiceAccount string
	// ServiceName is the headless Service that governs the StatefulSets;
	// default "teatree-dbmanager" (deploy/k8s/base).
	ServiceName string
	// ConfigMaps are added to the db-manager's environment (envFrom);
	// default ["teatree-config"].
	ConfigMaps []string
	// Secrets are added to the db-manager's environment (envFrom); default
	// ["teatree-postgres", "teatree-s3"].
	Secrets []string
	// NATSCredsSecret is mounted, optional, at /etc/teatree/nats, and
	// TEATREE_NATS_CREDS names its key "nats.creds" in it; default
	// "teatree-nats-creds"; "-" for none.
	NATSCredsSecret string
	// Env is added to the db-manager's environment after the variables
	// the runner sets.
	Env []corev1.EnvVar
	// StopTimeout is how long Stop waits beyond the pod's termination
	// grace period for the pod to be gone; default 1m.
	StopTimeout time.Duration
	// PollInterval is how often Stop looks at the StatefulSet's status;
	// default 1s.
	PollInterval time.Duration
}

func (c *KubeConfig) defaults() {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.StorageClass == "" {
		c.StorageClass = "teatree-model"
	}
	if c.VolumeSize.IsZero() {
		c.VolumeSize = resource.MustParse("20Gi")
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = "teatree-dbmanager"
	}
	if c.ServiceName == "" {
		c.ServiceName = "teatree-dbmanager"
	}
	if c.ConfigMaps == nil {
		c.ConfigMaps = []string{"teatree-config"}
	}
	if c.Secrets == nil {
		c.Secrets = []string{"teatree-postgres", "teatree-s3"}
	}
	if c.NATSCredsSecret == "" {
		c.NATSCredsSecret = "teatree-nats-creds"
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
}

// Validate fills defaults and checks c.
func (c *KubeConfig) Validate() error {
	c.defaults()
	var errs []error
	if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace %q: %s", c.Namespace, strings.Join(msgs, "; ")))
	}
	if c.Image == "" {
		errs = append(errs, errors.New("no db-manager image"))
	}
	if c.VolumeSize.Sign() <= 0 {
		errs = append(errs, fmt.Errorf("volume size %s is not positive", c.VolumeSize.String()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dispatcher: kubernetes config: %w", err)
	}
	return nil
}

// KubeRunner runs the db-manager of each model as a StatefulSet
// "dbm-<model>" with one ReadWriteOncePod volume, scaled between 0 and 1
// replicas. The StatefulSet and its volume stay when the db-manager is
// stopped (PVC retention Retain/Retain), so the next start finds the
// model's DuckDB file. Only the dispatcher that holds the leader Lease
// should call it (RunWithLeaderElection); the writer lease in NATS KV stays
// the fence between db-managers.
type KubeRunner struct {
	client kubernetes.Interface
	info   ModelInfo
	cfg    KubeConfig
	log    *slog.Logger

	mu      sync.Mutex
	running []string // the last answer of Running
}

var _ Runner = (*KubeRunner)(nil)

// NewKubeRunner returns a KubeRunner that manages StatefulSets through
// client and looks up size classes in info. It returns an error if cfg is
// invalid.
func NewKubeRunner(client kubernetes.Interface, info ModelInfo, cfg KubeConfig, log *slog.Logger) (*KubeRunner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KubeRunner{client: client, info: info, cfg: cfg, log: log}, nil
}

// StatefulSetName returns the name of model's StatefulSet: "dbm-<model>"
// when that is a DNS-1123 label of at most 52 characters; otherwise "dbm-",
// the model id cut to 37 characters with every character outside [a-z0-9-]
// replaced by '-', '-' and the first 10 hex digits of the sha256 of the
// model id. Distinct model ids give distinct names except for a sha256
// collision (detected by Ensure: ErrNameConflict).
func StatefulSetName(model string) string {
	name := "dbm-" + model
	if len(name) <= maxStatefulSetName && len(validation.IsDNS1123Label(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(model))
	suffix := hex.EncodeToString(sum[:])[:10]
	prefix := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(model))
	prefix = prefix[:min(len(prefix), maxStatefulSetName-len("dbm-")-1-len(suffix))]
	return "dbm-" + prefix + "-" + suffix
}

// modelLabel is the value of LabelModel for model.
func modelLabel(model string) string {
	if len(validation.IsValidLabelValue(model)) == 0 {
		return model
	}
	// The name ends in hex digits; a label value must also start with one.
	return strings.TrimLeft(strings.TrimPrefix(StatefulSetName(model), "dbm-"), "-")
}

// Ensure scales the StatefulSet of m to one replica, creating it if it does
// not exist, and updates its pod template if the model's size class (or
// the runner's configuration) changed, which restarts the pod. It returns
// ErrNameConflict if the StatefulSet belongs to another model.
func (r *KubeRunner) Ensure(ctx context.Context, m string) error {
	name, err := r.sizeClass(ctx, m)
	if err != nil {
		return err
	}
	class, err := ParseSizeClass(name)
	if err != nil {
		return fmt.Errorf("dispatcher: model %s: %w", m, err)
	}
	want := r.StatefulSet(m, class)
	sts := r.client.AppsV1().StatefulSets(r.cfg.Namespace)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := sts.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = sts.Create(ctx, want, metav1.CreateOptions{})
			if err == nil {
				r.log.Info("created db-manager statefulset", "model", m, "statefulset", want.Name, "size_class", class.Name)
			}
			return err
		}
		if err != nil {
			return err
		}
		if cur.Annotations[AnnotationModel] != m {
			return fmt.Errorf("%w: %s is model %q's, not %q", ErrNameConflict, cur.Name, cur.Annotations[AnnotationModel], m)
		}
		if cur.Annotations[AnnotationTemplate] == want.Annotations[AnnotationTemplate] {
			if cur.Spec.Replicas != nil && *cur.Spec.Replicas == 1 {
				return nil
			}
			return r.scale(ctx, cur, 1)
		}
		// The volume claim templates, selector and service name cannot
		// change; the template, labels and replicas can.
		cur.Labels = want.Labels
		cur.Annotations = want.Annotations
		cur.Spec.Replicas = want.Spec.Replicas
		cur.Spec.Template = want.Spec.Template
		cur.Spec.PersistentVolumeClaimRetentionPolicy = want.Spec.PersistentVolumeClaimRetentionPolicy
		_, err = sts.Update(ctx, cur, metav1.UpdateOptions{})
		if err == nil {
			r.log.Info("updated db-manager statefulset", "model", m, "statefulset", want.Name, "size_class", class.Name)
		}
		return err
	})
	if err != nil && !errors.Is(err, ErrNameConflict) {
		return fmt.Errorf("dispatcher: ensure statefulset %s: %w", want.Name, err)
	}
	return err
}

func (r *KubeRunner) sizeClass(ctx context.Context, m string) (string, error) {
	if r.info == nil {
		return DefaultSizeClass.Name, nil
	}
	name, err := r.info.SizeClass(ctx, m)
	if err != nil {
		return "", fmt.Errorf("dispatcher: size class of %s: %w", m, err)
	}
	if name == "" {
		name = DefaultSizeClass.Name
	}
	return name, nil
}

// scale sets spec.replicas of sts with a merge patch, which neither
// conflicts with nor undoes a concurrent template update.
func (r *KubeRunner) scale(ctx context.Context, sts *appsv1.StatefulSet, replicas int32) error {
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	_, err := r.client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err == nil {
		r.log.Info("scaled db-manager statefulset", "model", sts.Annotations[AnnotationModel], "statefulset", sts.Name, "replicas", replicas)
	}
	return err
}

// Stop scales the StatefulSet of m to zero and waits until its pod is gone:
// at most the pod's termination grace period plus KubeConfig.StopTimeout.
// The pod gets SIGTERM and drains, checkpoints and releases its writer
// lease. Stop returns nil if the StatefulSet does not exist, and
// ErrNameConflict if it belongs to another model.
func (r *KubeRunner) Stop(ctx context.Context, m string) error {
	name := StatefulSetName(m)
	sts := r.client.AppsV1().StatefulSets(r.cfg.Namespace)
	cur, err := sts.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dispatcher: stop %s: %w", name, err)
	}
	if cur.Annotations[AnnotationModel] != m {
		return fmt.Errorf("%w: %s is model %q's, not %q", ErrNameConflict, name, cur.Annotations[AnnotationModel], m)
	}
	if cur.Spec.Replicas == nil || *cur.Spec.Replicas != 0 {
		if err := r.scale(ctx, cur, 0); err != nil {
			return fmt.Errorf("dispatcher: stop %s: %w", name, err)
		}
	}
	grace := time.Duration(0)
	if g := cur.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	err = wait.PollUntilContextTimeout(ctx, r.cfg.PollInterval, grace+r.cfg.StopTimeout, true, func(ctx context.Context) (bool, error) {
		cur, err := sts.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			r.log.Warn("waiting for db-manager to stop", "model", m, "statefulset", name, "err", err)
			return false, nil
		}
		// The controller has seen the scale-down and no pod is left, not
		// even a terminating one.
		return cur.Status.ObservedGeneration >= cur.Generation && cur.Status.Replicas == 0, nil
	})
	if err != nil {
		return fmt.Errorf("dispatcher: stop %s: waiting for the pod to end: %w", name, err)
	}
	return nil
}

// Running lists, sorted, the models whose StatefulSet has spec.replicas 1
// (the db-manager runs or is starting). If the API server cannot be asked
// within 30 s it logs the error and returns the previous answer.
func (r *KubeRunner) Running(ctx context.Context) ([]string, error) {
	list, err := r.client.AppsV1().StatefulSets(r.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelName + "=teatree," + LabelComponent + "=db-manager," + LabelManagedBy + "=teatree-dispatcher",
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.log.Warn("listing db-manager statefulsets", "err", err)
		return nil, err
	}
	var models []string
	for _, s := range list.Items {
		if m := s.Annotations[AnnotationModel]; m != "" && s.Spec.Replicas != nil && *s.Spec.Replicas == 1 {
			models = append(models, m)
		}
	}
	slices.Sort(models)
	return models, nil
}

// StatefulSet returns the StatefulSet that runs the db-manager of model in
// class, with one replica.
func (r *KubeRunner) StatefulSet(model string, class SizeClass) *appsv1.StatefulSet {
	name := StatefulSetName(model)
	selector := map[string]string{
		LabelName:      "teatree",
		LabelComponent: "db-manager",
		LabelInstance:  name,
	}
	labels := map[string]string{
		LabelPartOf:    "teatree",
		LabelManagedBy: "teatree-dispatcher",
		LabelModel:     modelLabel(model),
		LabelSizeClass: class.Name,
	}
	for k, v := range selector {
		labels[k] = v
	}
	template := r.podTemplate(model, class, labels)
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: r.cfg.Namespace,
			Labels:    labels,
			Annotations: map[string]string{
				AnnotationModel:    model,
				AnnotationTemplate: templateHash(template),
			},
		},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr(int32(1)),
			Selector:    &metav1.LabelSelector{MatchLabels: selector},
			ServiceName: r.cfg.ServiceName,
			Template:    template,
			// One pod at a time, the old one gone before the new one
			// starts: the volume is ReadWriteOncePod anyway.
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			// The model's DuckDB file must outlive both a scale to zero
			// and a deleted StatefulSet.
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: claimName, Labels: labelsWithout(labels, LabelSizeClass)},
				Spec: corev1.PersistentVolumeClaimSpec{
					// One writer: the kubelet refuses a second pod on
					// the volume, on any node.
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod},
					StorageClassName: ptr(r.cfg.StorageClass),
					Resources: corev1.VolumeResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceStorage: r.cfg.VolumeSize},
					},
				},
			}},
		},
	}
}

func (r *KubeRunner) podTemplate(model string, class SizeClass, labels map[string]string) corev1.PodTemplateSpec {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    class.CPUQuantity(),
		corev1.ResourceMemory: class.MemoryQuantity(),
	}
	env := []corev1.EnvVar{
		{Name: "TEATREE_MODEL", Value: model},
		{Name: "TEATREE_DATA_DIR", Value: DataDir},
		{Name: "TEATREE_DUCKDB_THREADS", Value: strconv.FormatInt(class.DuckDBThreads(), 10)},
		{Name: "TEATREE_DUCKDB_MEMORY_LIMIT", Value: class.DuckDBMemoryLimit()},
		{Name: "TEATREE_HEALTH_ADDR", Value: ":" + strconv.Itoa(HealthPort)},
		// The Go runtime keeps its heap below the pod's limit and its
		// threads to the CPU quota.
		{Name: "GOMEMLIMIT", Value: fmt.Sprintf("%dMiB", class.MemoryMiB-class.DuckDBMemoryLimitMiB()-64)},
		{Name: "GOMAXPROCS", Value: strconv.FormatInt(class.CPU, 10)},
	}
	var envFrom []corev1.EnvFromSource
	for _, cm := range r.cfg.ConfigMaps {
		envFrom = append(envFrom, corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm}}})
	}
	for _, s := range r.cfg.Secrets {
		envFrom = append(envFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: s}}})
	}
	volumes := []corev1.Volume{{
		// Go's and DuckDB's scratch files outside the data directory;
		// the root filesystem is read-only.
		Name:         "tmp",
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("1Gi"))}},
	}}
	mounts := []corev1.VolumeMount{
		{Name: claimName, MountPath: DataDir},
		{Name: "tmp", MountPath: "/tmp"},
	}
	if r.cfg.NATSCredsSecret != "-" {
		volumes = append(volumes, corev1.Volume{
			Name: "nats-creds",
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: r.cfg.NATSCredsSecret, Optional: ptr(true), DefaultMode: ptr(int32(0o440)),
			}},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: "nats-creds", MountPath: natsCredsDir, ReadOnly: true})
		env = append(env, corev1.EnvVar{Name: "TEATREE_NATS_CREDS", Value: natsCredsDir + "/nats.creds"})
	}
	env = append(env, r.cfg.Env...)
	health := func(path string, period, timeout, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("health"), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: period, TimeoutSeconds: timeout, FailureThreshold: failures, SuccessThreshold: 1,
		}
	}
	return corev1.PodTemplateSpec{
		// Prometheus scrapes /metrics on the health port.
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
			"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(HealthPort), "prometheus.io/path": "/metrics",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName:            r.cfg.ServiceAccount,
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			TerminationGracePeriodSeconds: ptr(int64(class.TerminationGrace / time.Second)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr(true),
				RunAsUser:    ptr(int64(65532)),
				RunAsGroup:   ptr(int64(65532)),
				// The volume is writable by the pod's group; chown only
				// a fresh volume, not every file of a big one at each start.
				FSGroup:             ptr(int64(65532)),
				FSGroupChangePolicy: ptr(corev1.FSGroupChangeOnRootMismatch),
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "db-manager",
				Image:           r.cfg.Image,
				ImagePullPolicy: r.cfg.ImagePullPolicy,
				Env:             env,
				EnvFrom:         envFrom,
				Ports:           []corev1.ContainerPort{{Name: "health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP}},
				Resources:       corev1.ResourceRequirements{Requests: resources, Limits: resources},
				VolumeMounts:    mounts,
				// /livez answers as soon as the process runs and the
				// volume is writable; the budget covers a slow volume
				// attach and a process that cannot start its health
				// server before opening the model.
				StartupProbe: health("/livez", 10, 5, int32(class.StartupBudget/(10*time.Second))),
				// Ready: the writer lease is held and the consumer bound
				// (WAL replay done).
				ReadinessProbe: health("/readyz", 5, 3, 3),
				// Alive: a small file on the data volume can be written
				// and fsynced (catches a volume remounted read-only).
				LivenessProbe: health("/livez", 10, 5, 6),
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr(true),
					ReadOnlyRootFilesystem:   ptr(true),
					AllowPrivilegeEscalation: ptr(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: volumes,
		},
	}
}

// templateHash is a short hash of the JSON form of t.
func templateHash(t corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		panic(err) // a PodTemplateSpec always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func labelsWithout(labels map[string]string, key string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// LeaseName is the coordination.k8s.io Lease the dispatchers elect their
// leader on.
const LeaseName = "teatree-dispatcher"

// leaderTimings are the leader election's durations: client-go's usual
// 15 s lease, 10 s renew deadline, 2 s retry period.
type leaderTimings struct{ lease, renew, retry time.Duration }

var defaultLeaderTimings = leaderTimings{lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second}

// RunWithLeaderElection campaigns for the Lease "teatree-dispatcher" in
// namespace as identity (the pod name) and calls run while it leads, with a
// context that ends when leadership is lost or ctx ends. The lease is
// released only after run has returned, so two dispatchers do not
// reconcile at once (a short overlap after a missed renewal would be
// harmless: Ensure and Stop are idempotent and the NATS writer lease is
// the fence). After losing the lease it campaigns again. It returns nil
// when ctx ends, or an error if the election cannot be set up.
func RunWithLeaderElection(ctx context.Context, client kubernetes.Interface, namespace, identity string, run func(ctx context.Context)) error {
	return runWithLeaderElection(ctx, client, namespace, identity, defaultLeaderTimings, run)
}

func runWithLeaderElection(ctx context.Context, client kubernetes.Interface, namespace, identity string, t leaderTimings, run func(ctx context.Context)) error {
	var l leader
	defer l.close()
	for ctx.Err() == nil {
		if err := l.leadOnce(ctx, client, namespace, identity, t, run); err != nil {
			return err
		}
	}
	return nil
}

// leader owns the calls of run: at most one at a time, none after close.
// client-go starts run in a goroutine it does not wait for.
type leader struct {
	mu     sync.Mutex // held while run runs
	closed bool
}

// close waits for a running run and prevents further ones.
func (l *leader) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// leadOnce campaigns once and leads until leadership is lost or ctx ends.
func (l *leader) leadOnce(ctx context.Context, client kubernetes.Interface, namespace, identity string, t leaderTimings, run func(ctx context.Context)) error {
	// The election outlives ctx while run winds down: electCancel ends it
	// once run has returned, and that releases the lease.
	electCtx, electCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer electCancel()
	var leading atomic.Bool
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: namespace},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
		},
		Name:            LeaseName,
		LeaseDuration:   t.lease,
		RenewDeadline:   t.renew,
		RetryPeriod:     t.retry,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				l.mu.Lock()
				defer l.mu.Unlock()
				defer electCancel()
				if l.closed || lctx.Err() != nil {
					return
				}
				leading.Store(true)
				rctx, cancel := context.WithCancel(lctx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				run(rctx)
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("dispatcher: leader election: %w", err)
	}
	// When ctx ends before this dispatcher leads, stop campaigning; when
	// it leads, run's context ends and OnStartedLeading ends the election.
	defer context.AfterFunc(ctx, func() {
		if !leading.Load() {
			electCancel()
		}
	})()
	le.Run(electCtx)
	return nil
}
