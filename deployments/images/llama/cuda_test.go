package llamaimage

import (
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// hostDriverLib is the one library the CUDA image may lack: the NVIDIA
// driver's, which the NVIDIA container runtime mounts from the node.
const hostDriverLib = "libcuda.so.1"

// TestCUDAImage checks the image `make llama-cuda-image` builds
// (LLAMA_CUDA_IMAGE, set by `make test-llama-cuda`; not part of make test)
// on a machine without a GPU: ggml's CUDA backend and the CUDA 12.4 runtime
// are in it; every ELF file's needed libraries are in it (read from the
// files themselves, with their RUNPATH), libcuda.so.1 apart; no driver
// library and no shell; the runtime asks the NVIDIA container runtime for
// the compute libraries; llama-server lists its devices (none: ggml's CUDA
// backend cannot load without the driver) and the generate role, with
// every layer asked on the GPU as the scheduler asks it, serves the tiny
// llama on the CPU.
func TestCUDAImage(t *testing.T) {
	image := os.Getenv("LLAMA_CUDA_IMAGE")
	if image == "" {
		t.Skip("LLAMA_CUDA_IMAGE unset (make test-llama-cuda builds the image and sets it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("Files", func(t *testing.T) {
		root := exportImage(ctx, t, image)
		for _, f := range []string{"usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cuda.so", "usr/lib/x86_64-linux-gnu/libcudart.so.12",
			"usr/lib/x86_64-linux-gnu/libcublas.so.12", "usr/lib/x86_64-linux-gnu/libcublasLt.so.12", "usr/bin/llama-server", "usr/local/bin/nlpswarm"} {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("missing %s: %v", f, err)
			}
		}
		cacheOwnedByNobody(t, root)
		libDirs := []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"}
		elfs, missing := 0, map[string][]string{}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			base := d.Name()
			if strings.HasPrefix(base, "libcuda.so") || strings.HasPrefix(base, "libnvidia-") {
				t.Errorf("a driver library is in the image: %s", rel)
			}
			if rel == "bin/sh" || rel == "usr/bin/sh" || rel == "bin/bash" {
				t.Errorf("a shell is in the image: %s", rel)
			}
			f, err := elf.Open(path)
			if err != nil {
				return nil // not an ELF file
			}
			defer f.Close()
			needed, _ := f.ImportedLibraries()
			if len(needed) == 0 {
				return nil
			}
			elfs++
			dirs := append([]string(nil), libDirs...)
			for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
				paths, _ := f.DynString(tag)
				for _, p := range paths {
					for _, dir := range strings.Split(p, ":") {
						dir = strings.ReplaceAll(dir, "$ORIGIN", "/"+filepath.Dir(rel))
						dirs = append(dirs, strings.TrimPrefix(filepath.Clean(dir), "/"))
					}
				}
			}
		lib:
			for _, lib := range needed {
				for _, dir := range dirs {
					if _, err := os.Stat(filepath.Join(root, dir, lib)); err == nil {
						continue lib
					}
				}
				missing[lib] = append(missing[lib], rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if users := missing[hostDriverLib]; len(users) == 0 || !strings.Contains(strings.Join(users, " "), "libggml-cuda.so") {
			t.Errorf("%s is not needed by ggml's CUDA backend (%v): is the backend a CUDA build?", hostDriverLib, users)
		}
		delete(missing, hostDriverLib)
		if len(missing) > 0 || elfs < 5 {
			t.Errorf("closure: %d ELF files, missing %v", elfs, missing)
		}
		t.Logf("%d ELF files, every needed library in the image but %s", elfs, hostDriverLib)
	})

	t.Run("DriverCapabilities", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", "{{json .Config.Env}}", image).Output()
		var env []string
		if err != nil || json.Unmarshal(out, &env) != nil {
			t.Fatalf("docker image inspect: %v %s", err, out)
		}
		if !strings.Contains(strings.Join(env, " "), "NVIDIA_DRIVER_CAPABILITIES=compute,utility") {
			t.Errorf("env %v: the NVIDIA container runtime would not mount the compute libraries", env)
		}
	})

	t.Run("ListDevices", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--entrypoint", "/usr/bin/llama-server", image, "--list-devices").CombinedOutput()
		if err != nil {
			t.Fatalf("llama-server --list-devices without a GPU: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "CUDA0") {
			t.Errorf("a CUDA device listed on a machine without one:\n%s", out)
		}
		t.Logf("llama-server --list-devices, no GPU:\n%s", strings.TrimSpace(string(out)))
	})

	t.Run("ServesOnCPUWithoutGPU", func(t *testing.T) {
		const cred = "call-credential-of-tiny"
		base := runRole(ctx, t, image, ggufgen.TinyLlama(1).Build(), cred, "--generation.gpulayers", "999")
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/completions", strings.NewReader(`{"prompt":"hello world","max_tokens":4,"temperature":0}`))
		req.Header.Set("Authorization", "Bearer "+cred)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"completion_tokens":4`) {
			t.Fatalf("completion: %d %s", resp.StatusCode, body)
		}
	})
}

// exportImage writes image's filesystem to a temporary folder (docker
// create, docker export; nothing runs) and returns it.
func exportImage(ctx context.Context, t *testing.T, image string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "create", image).Output()
	if err != nil {
		t.Fatalf("docker create: %v", err)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command("docker", "rm", id).Run()
	root := t.TempDir()
	export := exec.CommandContext(ctx, "docker", "export", id)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", root)
	pipe, err := export.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := export.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if err := export.Wait(); err != nil {
		t.Fatalf("docker export: %v", err)
	}
	return root
}

// cacheOwnedByNobody checks that the image's artifact cache
// (/var/lib/nlpswarm/cache, where the scheduler mounts the node's artifact
// volume) belongs to the user the replicas run as: Docker copies it into
// the volume when a generation replica is the first to create it, which
// the replica must then be able to write.
func cacheOwnedByNobody(t *testing.T, root string) {
	t.Helper()
	st, err := os.Stat(filepath.Join(root, "var/lib/nlpswarm/cache"))
	if err != nil {
		t.Fatalf("no artifact cache folder: %v", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != 65534 || sys.Gid != 65534 || !st.IsDir() {
		t.Errorf("/var/lib/nlpswarm/cache: %v %+v, want a folder of 65534:65534", st.Mode(), st.Sys())
	}
}
