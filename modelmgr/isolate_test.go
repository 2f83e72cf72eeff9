package modelmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets this test binary be its own validation child: with the
// argument "child-helper <mode>" it serves one request like
// `nlpswarm validate-artifact`, with a stand-in for the smoke inference that
// does what a hostile model would make the engine do (mode).
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "child-helper" {
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout, hostileEngineStandIn(os.Args[2])); err != nil {
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
// hang, panic in a goroutine, or report what it can see (its environment and
// file descriptors).
func hostileEngineStandIn(mode string) Validator {
	extract := func(ctx context.Context, path, dest string) error {
		return os.MkdirAll(dest, 0o755)
	}
	// the stand-in runs in Extract, before CheckDir would refuse the empty folder
	return Validator{Extract: extract, SmokeTimeout: time.Minute}.withStandIn(mode)
}

func (v Validator) withStandIn(mode string) Validator {
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
			ents, _ := os.ReadDir("/proc/self/fd")
			var fds []string
			for _, e := range ents {
				target, _ := os.Readlink("/proc/self/fd/" + e.Name())
				fds = append(fds, e.Name()+"="+target)
			}
			sort.Strings(fds)
			return fmt.Errorf("env=%q fds=%v", os.Environ(), fds)
		}
		return next(ctx, path, dest)
	}
	return v
}

func isolation(t *testing.T, mode string, lim ChildLimits) *Isolation {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Isolation{Command: []string{exe, "child-helper", mode}, Limits: lim}
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
