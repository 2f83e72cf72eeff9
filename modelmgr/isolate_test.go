package modelmgr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/sandbox"
)

// TestMain lets this test binary be its own validation child: with the
// arguments "child-helper <mode> [args]" it serves one request like
// `nlpswarm validate-artifact` (the same ServeChild: limits, then the
// sandbox), with a stand-in for the smoke inference that does what a
// hostile model would make the engine do (mode).
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "child-helper" {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout, hostileEngineStandIn(os.Args[2], os.Args[3:]...)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var sink [][]byte

// hostileEngineStandIn is a Validator whose extraction and smoke inference
// are replaced by what an engine fed a hostile model does: eat memory, spin,
// hang, panic in a goroutine, report what it can see (its environment and
// file descriptors), or try to reach files and addresses outside its
// sandbox (args).
func hostileEngineStandIn(mode string, args ...string) Validator {
	extract := func(ctx context.Context, path, dest string) error {
		return os.MkdirAll(dest, 0o755)
	}
	// the stand-in runs in Extract, before CheckDir would refuse the empty folder
	return Validator{Extract: extract, SmokeTimeout: time.Minute}.withStandIn(mode, args...)
}

func (v Validator) withStandIn(mode string, args ...string) Validator {
	next := v.Extract
	v.Extract = func(ctx context.Context, path, dest string) error {
		switch mode {
		case "memory":
			for {
				sink = append(sink, make([]byte, 64<<20))
				for i := range sink[len(sink)-1] {
					if i%4096 == 0 {
						sink[len(sink)-1][i] = 1
					}
				}
			}
		case "spin":
			x := 0
			for {
				x++
			}
		case "hang":
			time.Sleep(time.Hour)
		case "panic":
			done := make(chan bool)
			go func() {
				var dims []int
				_ = make([]float32, dims[0]-1) // index out of range, like a negative dim
				done <- true
			}()
			<-done
		case "look":
			// descriptors found with fcntl: the sandbox denies listing /proc/self/fd
			var fds []string
			for fd := 0; fd < 4096; fd++ {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
					target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
					fds = append(fds, fmt.Sprintf("%d=%s", fd, target))
				}
			}
			return fmt.Errorf("env=%q fds=%v", os.Environ(), fds)
		case "reach":
			// what an engine exploited by the model could read, write or
			// connect to: "name=path" files, "dial=addr"
			if err := next(ctx, path, dest); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dest, "model.onnx"), []byte("weights"), 0o644); err != nil {
				return fmt.Errorf("unpack: %w", err)
			}
			got := []string{"archive=" + errnoOf(readErr(path)), "model=" + errnoOf(readErr(filepath.Join(dest, "model.onnx")))}
			for _, a := range args {
				name, target, _ := strings.Cut(a, "=")
				var err error
				if name == "dial" {
					var c net.Conn
					if c, err = net.DialTimeout("tcp", target, 5*time.Second); err == nil {
						c.Close()
					}
				} else {
					err = readErr(target)
				}
				got = append(got, name+"="+errnoOf(err))
			}
			return errors.New(strings.Join(got, " "))
		}
		return next(ctx, path, dest)
	}
	return v
}

func readErr(path string) error {
	_, err := os.ReadFile(path)
	return err
}

func errnoOf(err error) string {
	var en syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &en):
		return strings.ReplaceAll(en.Error(), " ", "_")
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

func isolation(t *testing.T, mode string, lim ChildLimits, args ...string) *Isolation {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Isolation{Command: append([]string{exe, "child-helper", mode}, args...), Limits: lim}
}

func runIsolated(t *testing.T, mode string, lim ChildLimits) (time.Duration, error) {
	t.Helper()
	v := Validator{Isolation: isolation(t, mode, lim)}
	start := time.Now()
	_, err := v.Validate(context.Background(), filepath.Join(t.TempDir(), "any.tar.gz"), t.TempDir(), "feature-extraction")
	return time.Since(start), err
}

func reasons(err error) string {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return strings.Join(ve.Reasons, "; ")
	}
	return ""
}

// A model that eats memory, spins, hangs or panics a goroutine ends the
// child, and the upload gets a refusal (422) naming the limit; the parent
// lives on.
func TestIsolationLimits(t *testing.T) {
	cases := []struct {
		mode string
		lim  ChildLimits
		want string
	}{
		{"memory", ChildLimits{MemoryBytes: 1 << 30, CPUSeconds: 60, Wall: time.Minute}, "memory limit of 1024 MiB"},
		{"spin", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 2, Wall: time.Minute}, "CPU-time limit of 2s"},
		{"hang", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 60, Wall: 2 * time.Second}, "wall-time limit of 2s"},
		{"panic", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 60, Wall: time.Minute}, "crashed the validation: panic: runtime error: index out of range"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			took, err := runIsolated(t, c.mode, c.lim)
			if !strings.Contains(reasons(err), c.want) {
				t.Fatalf("after %s: %v, want a refusal with %q", took, err, c.want)
			}
			if took > 30*time.Second {
				t.Fatalf("took %s", took)
			}
		})
	}
}

// The child sees no variable of the server's environment and no file
// descriptor beyond stdin, stdout, stderr (and the one reading /proc/self/fd).
func TestIsolationHasNoSecrets(t *testing.T) {
	t.Setenv("NLPSWARM_INTERNAL_TOKEN", "s3cr3t")
	open := filepath.Join(t.TempDir(), "parent-secret-file")
	if err := os.WriteFile(open, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	// a descriptor without close-on-exec, as one inherited from whoever
	// started the server would be
	fd, err := syscall.Open(open, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	_, err = runIsolated(t, "look", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 10, Wall: time.Minute})
	r := reasons(err)
	if !strings.Contains(r, "env=") {
		t.Fatalf("no report from the child: %v", err)
	}
	if strings.Contains(r, "s3cr3t") || strings.Contains(r, "NLPSWARM") {
		t.Fatalf("the child inherited the server's environment: %s", r)
	}
	t.Logf("child: %s", r)
	if strings.Contains(r, "parent-secret-file") {
		t.Fatalf("the child inherited a file the server had open: %s", r)
	}
	// beyond 0-2 only what the child's Go runtime opened itself
	list := strings.TrimSuffix(r[strings.Index(r, "fds=[")+5:], "]")
	if !strings.HasPrefix(list, "0=") {
		t.Fatalf("the child listed no descriptor: %s", r)
	}
	for _, fd := range strings.Fields(list) {
		num, target, _ := strings.Cut(fd, "=")
		if n, _ := strconv.Atoi(num); n <= 2 {
			continue
		}
		if !(target == "" || strings.HasPrefix(target, "/sys/fs/cgroup/") || strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "/proc/")) {
			t.Errorf("the child holds descriptor %s", fd)
		}
	}
}

// Issue 17, the validation child's reach: an engine the model exploits runs
// as the apiserver's user, so before the sandbox it could read the server's
// Docker secrets, other tenants' blobs and uploads in the same store, and
// /etc, and connect anywhere. Sandboxed, the child reads its own archive
// and unpacked model and gets EACCES for the rest. The fake secret, the
// other blob and the other upload are the test's own files, which the
// child's uid could read without Landlock.
func TestIsolationSandbox(t *testing.T) {
	if st := sandbox.Probe(); !st.Enforced() {
		pgtest.Unavailable(t, "Landlock", errors.New(st.Unavailable))
	}
	store := t.TempDir() // as the apiserver's: blobs/, tmp/ with uploads and validate-*
	for _, d := range []string{"blobs", "tmp"} {
		if err := os.Mkdir(filepath.Join(store, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"tmp/upload-1.part":  "this tenant's archive",
		"tmp/upload-2.part":  "another tenant's upload in flight",
		"blobs/sha256-other": "another tenant's model",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(store, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(t.TempDir(), "internal_token")
	if err := os.WriteFile(secret, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	iso := isolation(t, "reach", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 10, Wall: time.Minute},
		"secret="+secret, "blob="+filepath.Join(store, "blobs", "sha256-other"), "upload="+filepath.Join(store, "tmp", "upload-2.part"),
		"passwd=/etc/passwd", "environ=/proc/1/environ", "dial="+l.Addr().String())
	_, err = Validator{Isolation: iso}.Validate(context.Background(), filepath.Join(store, "tmp", "upload-1.part"), filepath.Join(store, "tmp"), "feature-extraction")
	got := reasons(err)
	t.Logf("the child: %s", got)
	// dial: no socket at all, the seccomp filter refuses socket() before
	// Landlock would see a connect
	for _, want := range []string{"archive=ok", "model=ok", "secret=permission_denied", "blob=permission_denied",
		"upload=permission_denied", "passwd=permission_denied", "environ=permission_denied",
		"dial=operation_not_permitted"} {
		if !strings.Contains(got, want) {
			t.Errorf("want %s in the child's report", want)
		}
	}
}

// What the child enforced (or why nothing) comes back with the metadata,
// and a validation without a child says it had no sandbox.
func TestValidationReportsItsSandbox(t *testing.T) {
	iso := isolation(t, "none", ChildLimits{MemoryBytes: 4 << 30, CPUSeconds: 10, Wall: time.Minute})
	md, _ := Validator{Isolation: iso}.Validate(context.Background(), filepath.Join(t.TempDir(), "any.tar.gz"), t.TempDir(), "feature-extraction")
	want := sandbox.Probe()
	want.NoSockets = true // the child's policy asks for the socket filter, which this machine has
	if md.Sandbox != want {
		t.Fatalf("the child reported %+v, want %+v", md.Sandbox, want)
	}
	md, _ = Validator{Extract: func(context.Context, string, string) error { return nil }}.Validate(context.Background(), "any.tar.gz", t.TempDir(), "feature-extraction")
	if md.Sandbox.Enforced() || !strings.Contains(md.Sandbox.Unavailable, "own process") {
		t.Fatalf("in process: %+v", md.Sandbox)
	}
}
