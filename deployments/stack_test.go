package deployments

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shFunc runs a command in the repository root and returns its output; a
// failure or timeout fails the test.
type shFunc func(timeout time.Duration, env []string, name string, args ...string) string

// upStack brings the stack up from nothing (make down VOLUMES=1, make up)
// for a stack test and down again when the test ends, logging the tasks and
// the last lines of logServices when it failed. It skips when the ports are
// taken (a stack already up). It returns a command runner, the CLI (logged
// in as the admin) and the admin token.
func upStack(t *testing.T, root string, logServices ...string) (sh shFunc, cli func(args ...string) string, token []byte) {
	t.Helper()
	for _, port := range []string{"8080", "8081", "9090"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond); err == nil {
			c.Close()
			t.Skipf("port %s is taken (a stack already up?); make down first", port)
		}
	}
	sh = func(timeout time.Duration, env []string, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	// start clean: no stack, no volumes left from an earlier run
	t.Log(sh(5*time.Minute, nil, "make", "-s", "down", "VOLUMES=1"))
	start := time.Now()
	t.Log(sh(15*time.Minute, nil, "make", "-s", "up"))
	t.Logf("make up took %s", time.Since(start).Round(time.Second))
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range logServices {
				out, _ := exec.Command("docker", "service", "ps", "--no-trunc", svc).CombinedOutput()
				t.Logf("%s tasks:\n%s", svc, out)
				out, _ = exec.Command("docker", "service", "logs", "--tail", "30", svc).CombinedOutput()
				t.Logf("%s logs:\n%s", svc, out)
			}
		}
		cmd := exec.Command("make", "-s", "down", "VOLUMES=1")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		t.Logf("make down: %v %s", err, out)
	})
	token, err := os.ReadFile(filepath.Join(root, ".state", "admin_token"))
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"NLPSWARM_SERVER=http://127.0.0.1:8081", "NLPSWARM_TOKEN=" + strings.TrimSpace(string(token))}
	cli = func(args ...string) string {
		t.Helper()
		return sh(5*time.Minute, env, filepath.Join(root, "bin", "nlpswarm"), args...)
	}
	return sh, cli, token
}
