// Package miniotest gives tests a real S3 server: the pinned MinIO built
// by scripts/minio.sh, started once per test process on a loopback port
// with a temporary data directory, and killed when the process exits.
//
// The binary is $TEATREE_MINIO_BIN (make test sets it); without it the
// cache path of scripts/minio.sh is tried and tests that need S3 are
// skipped when MinIO was never built.
package miniotest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/teatree/teatree/objstore"
)

// Version is the MinIO module version scripts/minio.sh builds.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Credentials of the test server.
const (
	AccessKey = "teatree"
	SecretKey = "teatree-secret"
)

// Server is a running MinIO.
type Server struct {
	Endpoint string // http://127.0.0.1:port
	cmd      *exec.Cmd
}

var (
	once     sync.Once
	shared   *Server
	startErr error
)

// Binary returns the MinIO binary, or "" when it was never built and
// TEATREE_MINIO_BIN is unset.
func Binary() (string, error) {
	if p := os.Getenv("TEATREE_MINIO_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("TEATREE_MINIO_BIN=%s: %w (build it with scripts/minio.sh)", p, err)
		}
		return p, nil
	}
	cache := os.Getenv("TEATREE_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "teatree")
	}
	p := filepath.Join(cache, "minio-"+Version, "minio")
	if _, err := os.Stat(p); err != nil {
		return "", nil
	}
	return p, nil
}

// Start starts a MinIO server with its data in dir, on a free loopback
// port. It is killed when the calling process exits, or by Stop.
func Start(bin, dir string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	return StartAt(bin, dir, addr)
}

// StartAt starts a MinIO server with its data in dir on addr (host:port);
// a restart on the same dir and addr serves the same objects.
func StartAt(bin, dir, addr string) (*Server, error) {
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:0", dir)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("miniotest: start %s: %w", bin, err)
	}
	s := &Server{Endpoint: "http://" + addr, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("miniotest: MinIO at %s not ready after 30s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// Shared returns the server of this test process, starting it on first
// use; it skips the test when MinIO is not built.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if bin == "" {
		t.Skip("MinIO is not built: run scripts/minio.sh (make test does)")
	}
	once.Do(func() {
		dir, err := os.MkdirTemp("", "teatree-minio-")
		if err != nil {
			startErr = err
			return
		}
		shared, startErr = Start(bin, dir)
	})
	if startErr != nil {
		t.Fatal(startErr)
	}
	return shared
}

// Bucket creates a new empty bucket on s and returns the store config for
// it.
func (s *Server) Bucket(t testing.TB) objstore.S3Config {
	t.Helper()
	cfg, err := s.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// NewBucket creates a new empty bucket on s and returns the store config
// for it.
func (s *Server) NewBucket(ctx context.Context) (objstore.S3Config, error) {
	name := "t-" + strings.ToLower(rand.Text()[:16])
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")})
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return objstore.S3Config{}, fmt.Errorf("miniotest: create bucket: %w", err)
	}
	return objstore.S3Config{Bucket: name, Endpoint: s.Endpoint, Region: "us-east-1", PathStyle: true, AccessKey: AccessKey, SecretKey: SecretKey}, nil
}

// URL is the objstore URL of cfg (credentials are passed in the
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment, see Env).
func URL(cfg objstore.S3Config) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&path_style=true", cfg.Bucket, cfg.Prefix, cfg.Endpoint, cfg.Region)
}

// Env is the environment that gives the SDK's credential chain the test
// server's credentials.
func Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey, "AWS_REGION=us-east-1"}
}
