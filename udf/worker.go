package udf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/tetratelabs/wazero"
)

// A module runs in a sandbox process: this program's own executable
// (/proc/self/exe) started with only workerEnv in its environment, which
// makes this package's init serve the protocol below on file descriptors
// 3 (from the host) and 4 (to the host) and exit, before the program's
// main runs. The host kills it (SIGKILL) when a call's context ends, which
// is the CPU cap; it dies with the host too (Linux parent-death signal).
//
// Protocol: frames of an op byte, a little-endian uint32 length and that
// many bytes. The host sends one frame and reads one reply:
//
//	opCompile     pages (uint32) + the module's bytes  → opOK | opModuleErr | opHostErr
//	opInstantiate (empty)                               → opOK | opModuleErr | opHostErr
//	opProcess     len(in) (uint32) + in + params        → opOutput | opModuleErr | opHostErr
//	opClose       (empty)                               → opOK
//
// A sandbox process serves one compiled module; opInstantiate makes a new
// instance of it (closing the previous one), so no module state outlives
// a request even when the host reuses the process for the next one.
const workerEnv = "TEATREE_UDF_WORKER"

const (
	opCompile     byte = 'c'
	opInstantiate byte = 'i'
	opProcess     byte = 'p'
	opClose       byte = 'x'
	opOK          byte = 'k'
	opOutput      byte = 'o'
	opModuleErr   byte = 'e' // the module's fault: the text after "module: "
	opHostErr     byte = 'f' // the sandbox's own failure
)

func init() {
	dir, ok := os.LookupEnv(workerEnv)
	if !ok {
		return
	}
	os.Exit(serveWorker(dir, os.NewFile(3, "udf-in"), os.NewFile(4, "udf-out")))
}

// serveWorker is the sandbox process: it serves frames from in until in
// ends. dir is the engine's compilation cache directory.
func serveWorker(dir string, in io.Reader, out io.Writer) int {
	ctx := context.Background()
	r, w := bufio.NewReaderSize(in, 1<<16), bufio.NewWriterSize(out, 1<<16)
	reply := func(op byte, b ...[]byte) bool {
		return writeFrame(w, op, b...) == nil && w.Flush() == nil
	}
	fail := func(err error) bool {
		if msg, ok := strings.CutPrefix(err.Error(), ErrModule.Error()+": "); ok && errors.Is(err, ErrModule) {
			return reply(opModuleErr, []byte(msg))
		}
		return reply(opHostErr, []byte(err.Error()))
	}
	eng, err := newEngine(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var (
		pages uint32
		c     wazero.CompiledModule
		inst  *instance
	)
	for {
		op, b, err := readFrame(r, 1<<32-1)
		if err != nil {
			return 0 // the host closed the pipe (or died)
		}
		ok := true
		switch op {
		case opCompile:
			if len(b) < 4 {
				ok = reply(opHostErr, []byte("short compile frame"))
				break
			}
			pages = binary.LittleEndian.Uint32(b)
			if c, err = eng.compile(ctx, pages, Digest(b[4:]), b[4:]); err != nil {
				ok = fail(err)
				break
			}
			ok = reply(opOK)
		case opInstantiate:
			if inst != nil {
				inst.close(ctx)
				inst = nil
			}
			if c == nil {
				ok = reply(opHostErr, []byte("instantiate before compile"))
				break
			}
			if inst, err = eng.instantiate(ctx, pages, c); err != nil {
				ok = fail(err)
				break
			}
			ok = reply(opOK)
		case opProcess:
			if inst == nil || len(b) < 4 || uint64(binary.LittleEndian.Uint32(b)) > uint64(len(b)-4) {
				ok = reply(opHostErr, []byte("process without an instance or with a short frame"))
				break
			}
			n := 4 + int(binary.LittleEndian.Uint32(b))
			res, err := inst.call(ctx, b[4:n], b[n:])
			if err != nil {
				ok = fail(err)
				break
			}
			ok = reply(opOutput, res)
		case opClose:
			if inst != nil {
				inst.close(ctx)
				inst = nil
			}
			ok = reply(opOK)
		default:
			ok = reply(opHostErr, []byte(fmt.Sprintf("unknown op %q", op)))
		}
		if !ok {
			return 1
		}
	}
}

// writeFrame writes one frame of op and the concatenation of parts.
func writeFrame(w *bufio.Writer, op byte, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if uint64(n) > 1<<32-1 {
		return fmt.Errorf("udf: a frame of %d bytes is too large", n)
	}
	var h [5]byte
	h[0] = op
	binary.LittleEndian.PutUint32(h[1:], uint32(n))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// readFrame reads one frame of at most max bytes.
func readFrame(r *bufio.Reader, max uint64) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[1:])
	if uint64(n) > max {
		return 0, nil, fmt.Errorf("udf: a frame of %d bytes, more than the %d it may have", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return h[0], b, nil
}

// worker is the host's side of one sandbox process.
type worker struct {
	key    compiledKey
	cmd    *exec.Cmd
	r      *bufio.Reader
	w      *bufio.Writer
	pipes  [2]*os.File // the host's ends: to the process, from it
	stderr *boundedBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done

	killed atomic.Bool
}

// spawn starts a sandbox process whose engine caches compiled code in
// dir, and has it compile wasm for key.pages. ctx bounds the compile.
func spawn(ctx context.Context, dir string, key compiledKey, wasm []byte) (*worker, error) {
	childIn, toChild, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("udf: sandbox process: %w", err)
	}
	fromChild, childOut, err := os.Pipe()
	if err != nil {
		childIn.Close()
		toChild.Close()
		return nil, fmt.Errorf("udf: sandbox process: %w", err)
	}
	w := &worker{key: key, stderr: &boundedBuffer{max: MaxStderr}, done: make(chan struct{}), pipes: [2]*os.File{toChild, fromChild}}
	w.cmd = exec.Command("/proc/self/exe")
	w.cmd.Env = []string{workerEnv + "=" + dir} // nothing of the host's environment (its secrets) reaches the sandbox
	w.cmd.ExtraFiles = []*os.File{childIn, childOut}
	w.cmd.Stderr = w.stderr
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = w.cmd.Start()
	childIn.Close()
	childOut.Close()
	if err != nil {
		toChild.Close()
		fromChild.Close()
		return nil, fmt.Errorf("udf: start a sandbox process: %w", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	w.r, w.w = bufio.NewReaderSize(fromChild, 1<<16), bufio.NewWriterSize(toChild, 1<<16)
	var pages [4]byte
	binary.LittleEndian.PutUint32(pages[:], key.pages)
	if _, err := w.call(ctx, "compile", opCompile, pages[:], wasm); err != nil {
		w.kill()
		return nil, err
	}
	return w, nil
}

// call sends one frame and returns the reply's payload: output for
// opOutput, nil for opOK. When ctx ends first the process is killed and
// the error says why (the CPU cap for WithTimeout's deadline, ErrModule;
// ctx.Err() for the caller's cancellation). A process that exits on its
// own (its Go runtime crashed) is the module's fault too (ErrModule, with
// its exit status and first line of stderr); one killed by a signal this
// host did not send is not (a plain error). what names the step for
// errors.
func (w *worker) call(ctx context.Context, what string, op byte, parts ...[]byte) ([]byte, error) {
	stop := context.AfterFunc(ctx, w.kill)
	err := writeFrame(w.w, op, parts...)
	if err == nil {
		err = w.w.Flush()
	}
	var (
		rop byte
		b   []byte
	)
	if err == nil {
		// A reply is at most the module's memory (its output or error
		// message is a slice of it), however the sandbox behaves.
		rop, b, err = readFrame(w.r, uint64(w.key.pages)<<16)
	}
	if stopped := stop(); err == nil && !stopped {
		w.kill() // the reply came, but so did the end of ctx: the process is not reused
	} else if err != nil {
		w.kill()
		if ctx.Err() != nil {
			if errors.Is(context.Cause(ctx), errDeadline) {
				return nil, fmt.Errorf("%w: %s did not finish within its CPU time limit", ErrModule, what)
			}
			return nil, ctx.Err()
		}
		<-w.done
		if ws, ok := w.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// Not the module's doing (it can crash its process, which then
			// exits with a status, not signal it): the kernel's OOM killer,
			// an operator. A machine failure: the request is retried.
			return nil, fmt.Errorf("udf: the sandbox process was killed from outside in %s (%v)", what, w.err)
		}
		if out := w.stderr.lastLines(); out != "" {
			return nil, fmt.Errorf("%w: its sandbox process died in %s (%v): %s", ErrModule, what, w.err, out)
		}
		return nil, fmt.Errorf("%w: its sandbox process died in %s (%v)", ErrModule, what, w.err)
	}
	switch rop {
	case opOK, opOutput:
		return b, nil
	case opModuleErr:
		return nil, fmt.Errorf("%w: %s", ErrModule, b)
	default:
		return nil, fmt.Errorf("udf: sandbox process: %s", b)
	}
}

// kill kills the process (SIGKILL) and closes the host's pipes; the
// process is reaped in the background.
func (w *worker) kill() {
	if w.killed.CompareAndSwap(false, true) {
		w.cmd.Process.Kill()
		w.pipes[0].Close()
		w.pipes[1].Close()
	}
}

// alive reports whether the process runs and was not killed.
func (w *worker) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return !w.killed.Load()
	}
}
