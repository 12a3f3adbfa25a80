package udf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teatree/teatree/udf"
	"github.com/teatree/teatree/udf/udftest"
)

// TestSandboxProcess: an instance runs in a process of its own that gets
// none of the host's environment; a request that ended cleanly leaves the
// process for the next instance of the module (a fresh instance in it), a
// failed call has it killed.
func TestSandboxProcess(t *testing.T) {
	t.Setenv("TEATREE_TEST_SECRET", "s3cr3t")
	h, err := udf.NewHost(udftest.CacheDir()) // a host of its own: no idle process of the other tests
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	input := stream(t, [][4]float64{{1, 2, 3, 4}})
	ctx := context.Background()
	wasm := modules["greatcircle"]
	first, err := h.Instantiate(ctx, udf.Digest(wasm), wasm, udf.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	pid := first.PID()
	if pid == os.Getpid() {
		t.Fatal("the instance runs in the host's process")
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if vars := strings.Split(strings.TrimRight(string(env), "\x00"), "\x00"); len(vars) != 1 || !strings.HasPrefix(vars[0], "TEATREE_UDF_WORKER=") {
		t.Errorf("the sandbox process's environment is %q; want only TEATREE_UDF_WORKER", vars)
	}
	want, err := first.Process(ctx, input, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}

	second, err := h.Instantiate(ctx, udf.Digest(wasm), wasm, udf.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if second.PID() != pid {
		t.Errorf("the second instance runs in process %d; want the idle %d", second.PID(), pid)
	}
	got, err := second.Process(ctx, input, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("second instance: %v, output equal %v", err, bytes.Equal(got, want))
	}
	// The module's own error fails the call; the process is not reused.
	if _, err := second.Process(ctx, input, []byte(`{"lat1":"nope"}`)); !errors.Is(err, udf.ErrModule) {
		t.Fatalf("error %v; want the module's", err)
	}
	second.Close(ctx)
	third, err := h.Instantiate(ctx, udf.Digest(wasm), wasm, udf.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close(ctx)
	if third.PID() == pid {
		t.Errorf("the process of a failed call (%d) serves a new instance", pid)
	}
}

// TestSandboxProcessDies: a sandbox process that dies in the middle of a
// call fails that call alone, and the host goes on. One whose runtime
// crashes (here SIGQUIT: Go dumps its goroutines and exits with status 2,
// as on a fatal error) is the module's fault; one killed by a signal from
// outside (the kernel's OOM killer) is not, so the request is retried.
func TestSandboxProcessDies(t *testing.T) {
	for _, c := range []struct {
		sig    syscall.Signal
		module bool
		want   string
	}{
		{syscall.SIGQUIT, true, "its sandbox process died in teatree_process (exit status 2): SIGQUIT: quit"},
		{syscall.SIGKILL, false, "the sandbox process was killed from outside in teatree_process (signal: killed)"},
	} {
		t.Run(c.sig.String(), func(t *testing.T) {
			in, ctx := instantiate(t, host, "loop", udf.Limits{Timeout: time.Minute})
			pid := in.PID() // read here: the timer's goroutine has no happens-before with Close
			time.AfterFunc(300*time.Millisecond, func() { syscall.Kill(pid, c.sig) })
			start := time.Now()
			_, err := in.Process(ctx, stream(t, [][4]float64{{1, 2, 3, 4}}), nil)
			if err == nil || errors.Is(err, udf.ErrModule) != c.module || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want %q (the module's fault: %v)", err, c.want, c.module)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("the call returned after %s", d)
			}
			gc, ctx := instantiate(t, host, "greatcircle", udf.Limits{})
			if _, err := gc.Process(ctx, stream(t, [][4]float64{{1, 2, 3, 4}}), nil); err != nil {
				t.Errorf("after a dead sandbox process: %v", err)
			}
		})
	}
}
