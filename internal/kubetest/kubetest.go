// Package kubetest gives tests a real Kubernetes control plane: etcd and
// kube-apiserver started by controller-runtime's envtest on loopback ports,
// kube-controller-manager running the StatefulSet and garbage collector
// controllers, and kwok simulating one fake node (FakeNode) on which bound
// pods become Running and Ready. There is no scheduler and no kubelet: a
// test binds a pod to FakeNode itself (Cluster.Bind), and no container
// runs.
//
// The binaries are built by scripts/k8s-test-bins.sh into a directory that
// $TEATREE_K8S_BIN_DIR names (make test sets it); without it the script's
// cache directory is tried, and tests that need the control plane are
// skipped when it was never built.
//
// One control plane serves a test process: Shared starts it on first use
// and Main (the package's TestMain) stops it when the tests are done. Tests
// isolate themselves by namespace (Cluster.Namespace).
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Versions that scripts/k8s-test-bins.sh builds; they must agree with it.
const (
	KubernetesVersion = "v1.37.2"
	KwokVersion       = "v0.8.0"
)

// EnvVar names the directory of the binaries.
const EnvVar = "TEATREE_K8S_BIN_DIR"

// FakeNode is the node kwok simulates.
const FakeNode = "kwok-node-0"

// binaries are the files scripts/k8s-test-bins.sh puts in its directory.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kwok", "kwok-stages.yaml"}

// BinDir returns the directory of the control plane's binaries:
// $TEATREE_K8S_BIN_DIR, or the cache directory of scripts/k8s-test-bins.sh.
// It returns "" when the variable is unset and the binaries were never
// built, and an error when the variable names a directory without them.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvVar); dir != "" {
		if err := complete(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w (build them with scripts/k8s-test-bins.sh)", EnvVar, dir, err)
		}
		return dir, nil
	}
	dir, err := cacheDir()
	if err != nil || complete(dir) != nil {
		return "", nil
	}
	return dir, nil
}

func complete(dir string) error {
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return err
		}
	}
	return nil
}

// cacheDir is the directory scripts/k8s-test-bins.sh --path prints: the
// cache, keyed by the sha256 of the build module's go.sum, the kwok version
// and the Go version.
func cacheDir() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	sum, err := os.ReadFile(filepath.Join(root, "scripts", "k8s-test-bins", "go.sum"))
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(sum)
	fmt.Fprintf(h, "kwok %s\n%s\n", KwokVersion, runtime.Version())
	cache := os.Getenv("TEATREE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "teatree")
	}
	return filepath.Join(cache, "k8s-test-bins-"+KubernetesVersion+"-"+hex.EncodeToString(h.Sum(nil))[:12]), nil
}

// repoRoot is the nearest directory above the working directory with the
// build module of scripts/k8s-test-bins.sh.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "k8s-test-bins", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kubetest: scripts/k8s-test-bins not found above the working directory")
		}
		dir = parent
	}
}

// Cluster is a running control plane.
type Cluster struct {
	// Config is the administrator's (group system:masters).
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface

	env   *envtest.Environment
	dir   string
	procs []*exec.Cmd
}

// Start starts etcd, kube-apiserver, kube-controller-manager and kwok from
// the binaries in bin, with their state in a new temporary directory, and
// waits until FakeNode is Ready. Logs of the controller manager and kwok
// are in that directory; Stop removes it.
func Start(bin string) (c *Cluster, err error) {
	dir, err := os.MkdirTemp("", "teatree-kubetest-")
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    bin,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  10 * time.Second,
	}
	// envtest starts etcd and kube-apiserver without a parent-death
	// signal: a test process killed (-timeout, ^C) would leave them
	// running. Through setpriv (util-linux), when present, they die with it.
	if setpriv, err := exec.LookPath("setpriv"); err == nil {
		etcd, err1 := deathWrapper(dir, setpriv, filepath.Join(bin, "etcd"))
		api, err2 := deathWrapper(dir, setpriv, filepath.Join(bin, "kube-apiserver"))
		if err := errors.Join(err1, err2); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		env.ControlPlane.Etcd = &envtest.Etcd{Path: etcd}
		env.ControlPlane.GetAPIServer().Path = api
	}
	// kube-apiserver 1.37 refuses a loopback advertise address with the
	// endpoint reconciler on; tests need no kubernetes Service endpoints.
	api := env.ControlPlane.GetAPIServer().Configure()
	api.Set("advertise-address", "127.0.0.1")
	api.Set("endpoint-reconciler-type", "none")
	c = &Cluster{env: env, dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.Config, err = env.Start(); err != nil {
		return nil, fmt.Errorf("kubetest: start etcd and kube-apiserver: %w", err)
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if err := c.exec(filepath.Join(bin, "kube-controller-manager"), "kube-controller-manager.log",
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=statefulset,garbagecollector", "--concurrent-statefulset-syncs=5"); err != nil {
		return nil, err
	}
	if err := c.exec(filepath.Join(bin, "kwok"), "kwok.log",
		"--kubeconfig="+kubeconfig, "--config="+filepath.Join(bin, "kwok-stages.yaml"),
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-ip=127.0.0.1", "--server-address="); err != nil {
		return nil, err
	}
	if err := c.addNode(context.Background()); err != nil {
		return nil, err
	}
	return c, nil
}

// deathWrapper writes a script into dir that runs bin with SIGKILL as its
// parent-death signal, and returns its path.
func deathWrapper(dir, setpriv, bin string) (string, error) {
	p := filepath.Join(dir, filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", setpriv, bin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	return p, nil
}

// exec starts a control plane process that logs into the file log of the
// cluster's directory and dies with the test process.
func (c *Cluster) exec(bin, log string, args ...string) error {
	out, err := os.Create(filepath.Join(c.dir, log))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("kubetest: start %s: %w", filepath.Base(bin), err)
	}
	out.Close()
	c.procs = append(c.procs, cmd)
	return nil
}

// addNode creates FakeNode and waits until kwok reports it Ready.
func (c *Cluster) addNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        FakeNode,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		Labels:      map[string]string{"type": "kwok", corev1.LabelHostname: FakeNode},
	}}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubetest: create node %s: %w", FakeNode, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, FakeNode, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("kubetest: node %s not Ready after 30s (kwok's log: %s): %w", FakeNode, filepath.Join(c.dir, "kwok.log"), err)
	}
	return nil
}

// Stop kills the controller manager and kwok, stops the API server and
// etcd, and removes the cluster's directory.
func (c *Cluster) Stop() {
	for _, p := range c.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	c.procs = nil
	_ = c.env.Stop()
	os.RemoveAll(c.dir)
}

var (
	once     sync.Once
	shared   *Cluster
	startErr error
)

// Shared returns the control plane of this test process, starting it on
// first use; it skips the test when the binaries were never built and
// $TEATREE_K8S_BIN_DIR is unset. The package's TestMain must be Main.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if bin == "" {
		t.Skip("the Kubernetes test binaries are not built: run scripts/k8s-test-bins.sh (make test does) or set " + EnvVar)
	}
	once.Do(func() { shared, startErr = Start(bin) })
	if startErr != nil {
		t.Fatal(startErr)
	}
	return shared
}

// Main runs the tests of m and stops the shared control plane if one was
// started; use it as TestMain: func TestMain(m *testing.M) { kubetest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

// Namespace creates a namespace for t with a name made of prefix and a
// random suffix, deleted when t ends, and returns its name.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + strings.ToLower(rand.Text()[:8])
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No namespace controller runs: the namespace stays Terminating,
		// harmless for a test process.
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Bind binds the pod to FakeNode, the scheduler's part; kwok then makes it
// Running and Ready.
func (c *Cluster) Bind(ctx context.Context, namespace, pod string) error {
	err := c.Client.CoreV1().Pods(namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: FakeNode},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kubetest: bind pod %s/%s to %s: %w", namespace, pod, FakeNode, err)
	}
	return nil
}

// WaitPodRunning waits until the pod exists, binds it to FakeNode if it is
// not bound, and waits until it is Running and Ready, for at most timeout.
func (c *Cluster) WaitPodRunning(ctx context.Context, namespace, pod string, timeout time.Duration) (*corev1.Pod, error) {
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		last = p
		if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
			if err := c.Bind(ctx, namespace, pod); err != nil && !apierrors.IsConflict(err) {
				return false, err
			}
			return false, nil
		}
		if p.Status.Phase != corev1.PodRunning {
			return false, nil
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		state := "absent"
		if last != nil {
			state = fmt.Sprintf("phase %q on node %q", last.Status.Phase, last.Spec.NodeName)
		}
		return nil, fmt.Errorf("kubetest: pod %s/%s not Running and Ready within %v (%s): %w", namespace, pod, timeout, state, err)
	}
	return last, nil
}

// As returns a clientset that impersonates user (e.g.
// "system:serviceaccount:ns:name") in groups, with the administrator's
// credentials: the API server authorizes each request as that user.
func (c *Cluster) As(user string, groups ...string) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return kubernetes.NewForConfig(cfg)
}
