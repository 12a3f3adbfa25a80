// Package kube runs teatree's db-managers on Kubernetes: a StatefulSet per
// model (Runner, the dispatcher's Runner there), reconciled with
// server-side apply under the field manager "teatree-dispatcher"; the size
// classes of their pods; and the leader election of the dispatcher's
// replicas on a coordination.k8s.io Lease (RunWithLeaderElection).
//
// It is the dispatcher's adapter for the Kubernetes API, the only teatree
// package that talks to it. The manifests of everything else (the
// dispatcher's Deployment, RBAC, the headless Service the StatefulSets
// name) are kustomize files in deploy/k8s; docs/kubernetes.md describes
// both.
package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/teatree/teatree/dispatcher"
)

// ModelInfo looks up the settings of a model in the control tables.
type ModelInfo interface {
	// SizeClass returns the size class name of model (goal_model.size_class);
	// "" means DefaultSizeClass.
	SizeClass(ctx context.Context, model string) (string, error)
}

// Labels and annotations on the objects a Runner manages.
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
	// AnnotationAppliedHash is a hash of the StatefulSet the dispatcher
	// applied last; a different hash means its configuration changed
	// (size class, image, runner configuration) and it is applied again.
	AnnotationAppliedHash = "teatree.io/applied-hash"
)

// FieldManager is the field manager of the dispatcher's server-side
// applies and patches: it owns every field of the StatefulSets it builds.
const FieldManager = "teatree-dispatcher"

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
var ErrNameConflict = errors.New("kube: statefulset belongs to another model")

// Config configures a Runner. Each default is an exported constant
// (or, for the lists and the quantity, a function) named after its field
// and written next to it; NewRunner fills the unset fields with them
// (Config.WithDefaults).
type Config struct {
	// Namespace of the StatefulSets; required ($TEATREE_NAMESPACE, from
	// the downward API in deploy/k8s).
	Namespace string
	// Image of the db-manager; required.
	Image string
	// ImagePullPolicy of the db-manager; default DefaultImagePullPolicy,
	// IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// StorageClass of the model volumes; default DefaultStorageClass,
	// "teatree-model" (deploy/longhorn).
	StorageClass string
	// VolumeSize is the initial size of a model volume; default
	// DefaultVolumeSize(), 20Gi.
	// Volume claim templates cannot change, so a volume is grown by
	// editing its PVC (the StorageClass allows expansion).
	VolumeSize resource.Quantity
	// ServiceAccount of the db-manager pods; default
	// DefaultServiceAccount, "teatree-dbmanager".
	// Its token is not mounted: a db-manager never talks to the API.
	ServiceAccount string
	// ServiceName is the headless Service that governs the StatefulSets;
	// default DefaultServiceName, "teatree-dbmanager" (deploy/k8s/base).
	ServiceName string
	// ConfigMaps are added to the db-manager's environment (envFrom);
	// default DefaultConfigMaps(), ["teatree-config"].
	ConfigMaps []string
	// Secrets are added to the db-manager's environment (envFrom); default
	// DefaultSecrets(), ["teatree-postgres", "teatree-s3"].
	Secrets []string
	// NATSCredsSecret is mounted, optional, at /etc/teatree/nats, and
	// TEATREE_NATS_CREDS names its key "nats.creds" in it; default
	// DefaultNATSCredsSecret, "teatree-nats-creds"; "-" for none.
	NATSCredsSecret string
	// Env is added to the db-manager's environment after the variables
	// the runner sets.
	Env []corev1.EnvVar
	// StopTimeout is how long Stop waits beyond the pod's termination
	// grace period for the pod to be gone; default DefaultStopTimeout, 1m.
	StopTimeout time.Duration
	// PollInterval is how often Stop looks at the StatefulSet's status;
	// default DefaultPollInterval, 1s.
	PollInterval time.Duration
}

// The defaults of Config; see each field.
const (
	DefaultImagePullPolicy = corev1.PullIfNotPresent
	DefaultStorageClass    = "teatree-model"
	DefaultServiceAccount  = "teatree-dbmanager"
	DefaultServiceName     = "teatree-dbmanager"
	DefaultNATSCredsSecret = "teatree-nats-creds"
	DefaultStopTimeout     = time.Minute
	DefaultPollInterval    = time.Second
)

// DefaultVolumeSize returns the default of Config.VolumeSize, 20Gi.
func DefaultVolumeSize() resource.Quantity { return resource.MustParse("20Gi") }

// DefaultConfigMaps returns the default of Config.ConfigMaps.
func DefaultConfigMaps() []string { return []string{"teatree-config"} }

// DefaultSecrets returns the default of Config.Secrets.
func DefaultSecrets() []string { return []string{"teatree-postgres", "teatree-s3"} }

// WithDefaults returns a copy of c whose unset fields hold their
// defaults (zero or negative durations included; a nil list, not an
// empty one).
func (c Config) WithDefaults() Config {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = DefaultImagePullPolicy
	}
	if c.StorageClass == "" {
		c.StorageClass = DefaultStorageClass
	}
	if c.VolumeSize.IsZero() {
		c.VolumeSize = DefaultVolumeSize()
	}
	if c.ServiceAccount == "" {
		c.ServiceAccount = DefaultServiceAccount
	}
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.ConfigMaps == nil {
		c.ConfigMaps = DefaultConfigMaps()
	}
	if c.Secrets == nil {
		c.Secrets = DefaultSecrets()
	}
	if c.NATSCredsSecret == "" {
		c.NATSCredsSecret = DefaultNATSCredsSecret
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	return c
}

// Validate checks c; it fills in nothing (call WithDefaults first).
func (c Config) Validate() error {
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
		return fmt.Errorf("kube: config: %w", err)
	}
	return nil
}

// Runner runs the db-manager of each model as a StatefulSet
// "dbm-<model>" with one ReadWriteOncePod volume, scaled between 0 and 1
// replicas. The StatefulSet and its volume stay when the db-manager is
// stopped (PVC retention Retain/Retain), so the next start finds the
// model's DuckDB file. Only the dispatcher that holds the leader Lease
// should call it (RunWithLeaderElection); the writer lease in NATS KV stays
// the fence between db-managers.
type Runner struct {
	client kubernetes.Interface
	info   ModelInfo
	cfg    Config
	log    *slog.Logger
}

var _ dispatcher.Runner = (*Runner)(nil)

// NewRunner returns a Runner that manages StatefulSets through
// client and looks up size classes in info. cfg's unset fields get their
// defaults (Config.WithDefaults); it returns an error if cfg is invalid.
func NewRunner(client kubernetes.Interface, info ModelInfo, cfg Config, log *slog.Logger) (*Runner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{client: client, info: info, cfg: cfg, log: log}, nil
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

// Ensure makes the StatefulSet of m run one replica with the pod template
// of the model's size class: it applies the StatefulSet (server-side
// apply, FieldManager, forced) when it does not exist, is scaled to zero,
// or was applied with another configuration (AnnotationAppliedHash); a
// changed template restarts the pod. Otherwise it only reads it. The
// fields the API server does not let change (selector, service name, pod
// management policy, volume claim templates) keep their values. It
// returns ErrNameConflict if the StatefulSet belongs to another model.
func (r *Runner) Ensure(ctx context.Context, m string) error {
	name, err := r.sizeClass(ctx, m)
	if err != nil {
		return err
	}
	class, err := ParseSizeClass(name)
	if err != nil {
		return fmt.Errorf("kube: model %s: %w", m, err)
	}
	want := r.StatefulSet(m, class)
	sts := r.client.AppsV1().StatefulSets(r.cfg.Namespace)
	cur, err := sts.Get(ctx, *want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return fmt.Errorf("kube: ensure statefulset %s: %w", *want.Name, err)
	case cur.Annotations[AnnotationModel] != m:
		return fmt.Errorf("%w: %s is model %q's, not %q", ErrNameConflict, cur.Name, cur.Annotations[AnnotationModel], m)
	case cur.Annotations[AnnotationAppliedHash] == want.Annotations[AnnotationAppliedHash] && cur.Spec.Replicas != nil && *cur.Spec.Replicas == 1:
		return nil
	}
	if cur != nil {
		if err := keepImmutable(want.Spec, cur.Spec); err != nil {
			return fmt.Errorf("kube: ensure statefulset %s: %w", *want.Name, err)
		}
	}
	if _, err := sts.Apply(ctx, want, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("kube: apply statefulset %s: %w", *want.Name, err)
	}
	r.log.Info("applied db-manager statefulset", "model", m, "statefulset", *want.Name, "size_class", class.Name, "created", cur == nil)
	return nil
}

// keepImmutable sets the fields of want that a StatefulSet cannot change
// after its creation to their values in cur, so that an apply after a
// change of the runner's configuration (e.g. Config.VolumeSize) is not
// refused: a model volume is grown by editing its PVC.
func keepImmutable(want *appsv1ac.StatefulSetSpecApplyConfiguration, cur appsv1.StatefulSetSpec) error {
	claims := slices.Clone(cur.VolumeClaimTemplates)
	for i := range claims {
		claims[i].Status = corev1.PersistentVolumeClaimStatus{}
	}
	b, err := json.Marshal(appsv1.StatefulSetSpec{
		Selector: cur.Selector, ServiceName: cur.ServiceName, PodManagementPolicy: cur.PodManagementPolicy, VolumeClaimTemplates: claims,
	})
	if err != nil {
		return err
	}
	var kept appsv1ac.StatefulSetSpecApplyConfiguration
	if err := json.Unmarshal(b, &kept); err != nil {
		return err
	}
	for i := range kept.VolumeClaimTemplates {
		kept.VolumeClaimTemplates[i].Status = nil // the controller's
	}
	want.Selector, want.ServiceName, want.PodManagementPolicy, want.VolumeClaimTemplates =
		kept.Selector, kept.ServiceName, kept.PodManagementPolicy, kept.VolumeClaimTemplates
	return nil
}

func (r *Runner) sizeClass(ctx context.Context, m string) (string, error) {
	if r.info == nil {
		return DefaultSizeClass.Name, nil
	}
	name, err := r.info.SizeClass(ctx, m)
	if err != nil {
		return "", fmt.Errorf("kube: size class of %s: %w", m, err)
	}
	if name == "" {
		name = DefaultSizeClass.Name
	}
	return name, nil
}

// scale sets spec.replicas of sts with a merge patch of its scale
// subresource, which touches no other field (an apply of replicas alone
// would remove every field the dispatcher applied before) and needs only
// patch on statefulsets/scale; the next Ensure's apply takes replicas back.
func (r *Runner) scale(ctx context.Context, sts *appsv1.StatefulSet, replicas int32) error {
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	_, err := r.client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}, "scale")
	if err == nil {
		r.log.Info("scaled db-manager statefulset", "model", sts.Annotations[AnnotationModel], "statefulset", sts.Name, "replicas", replicas)
	}
	return err
}

// Stop scales the StatefulSet of m to zero and waits until its pod is gone:
// at most the pod's termination grace period plus Config.StopTimeout.
// The pod gets SIGTERM and drains, checkpoints and releases its writer
// lease. Stop returns nil if the StatefulSet does not exist, and
// ErrNameConflict if it belongs to another model.
func (r *Runner) Stop(ctx context.Context, m string) error {
	name := StatefulSetName(m)
	sts := r.client.AppsV1().StatefulSets(r.cfg.Namespace)
	cur, err := sts.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kube: stop %s: %w", name, err)
	}
	if cur.Annotations[AnnotationModel] != m {
		return fmt.Errorf("%w: %s is model %q's, not %q", ErrNameConflict, name, cur.Annotations[AnnotationModel], m)
	}
	if cur.Spec.Replicas == nil || *cur.Spec.Replicas != 0 {
		if err := r.scale(ctx, cur, 0); err != nil {
			return fmt.Errorf("kube: stop %s: %w", name, err)
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
		return fmt.Errorf("kube: stop %s: waiting for the pod to end: %w", name, err)
	}
	return nil
}

// Running lists, sorted, the models whose StatefulSet has spec.replicas 1
// (the db-manager runs or is starting). It returns the API server's error
// if the StatefulSets cannot be listed.
func (r *Runner) Running(ctx context.Context) ([]string, error) {
	list, err := r.client.AppsV1().StatefulSets(r.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelName + "=teatree," + LabelComponent + "=db-manager," + LabelManagedBy + "=" + FieldManager,
	})
	if err != nil {
		return nil, fmt.Errorf("kube: list db-manager statefulsets: %w", err)
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
