package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// TestImage is the tag of the image tests build.
const TestImage = "nlpswarm:test"

// Engine returns a client of the local engine, API version negotiated.
func Engine(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.New(client.FromEnv) // negotiates the API version (the engine here is 1.41)
	if err != nil {
		pgtest.Unavailable(t, "docker engine", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.Ping(ctx, client.PingOptions{}); err != nil {
		pgtest.Unavailable(t, "docker engine", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Swarm returns a client of an engine that is a swarm manager.
func Swarm(t testing.TB) *client.Client {
	t.Helper()
	cl := Engine(t)
	info, err := cl.Info(context.Background(), client.InfoOptions{})
	if err != nil {
		pgtest.Unavailable(t, "docker info", err)
	}
	if info.Info.Swarm.LocalNodeState != "active" || !info.Info.Swarm.ControlAvailable {
		pgtest.Unavailable(t, "swarm manager", fmt.Errorf("swarm state %q, manager %v (run: docker swarm init)",
			info.Info.Swarm.LocalNodeState, info.Info.Swarm.ControlAvailable))
	}
	return cl
}

// Name returns a unique name for an object a test creates.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// RepoRoot is the folder holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test")
		}
		dir = parent
	}
}

var (
	imageOnce sync.Once
	imageID   string
	imageErr  error
)

// Image builds the binary and the image from the working tree once per test
// process (serialised across processes with a file lock) and returns its ID.
func Image(t testing.TB) string {
	t.Helper()
	Engine(t)
	imageOnce.Do(func() { imageID, imageErr = buildImage(RepoRoot(t)) })
	if imageErr != nil {
		t.Fatalf("build image: %v", imageErr)
	}
	return imageID
}

func buildImage(root string) (string, error) {
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, "bin", ".image.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-s", "image", "IMAGE="+TestImage)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make image: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "-f", "{{.Id}}", TestImage).Output()
	if err != nil {
		return "", fmt.Errorf("inspect %s: %v", TestImage, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// RemoveVolume removes a volume a test's services mounted, waiting (up to a
// minute) for their containers to go; it logs rather than fails.
func RemoveVolume(t testing.TB, cl *client.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := cl.VolumeRemove(context.Background(), name, client.VolumeRemoveOptions{Force: true})
		if err == nil || strings.Contains(err.Error(), "no such volume") || strings.Contains(strings.ToLower(err.Error()), "not found") {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("volume %s left behind: %v", name, err)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
