//go:build !agentonly

package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// startAPIServer runs the real apiserver role as a subprocess on a fresh
// database and returns its URL and the admin token.
func startAPIServer(t *testing.T) (url, token string) {
	t.Helper()
	url, token, _ = startAPIServerPID(t)
	return url, token
}

// startAPIServerPID is startAPIServer that also returns the process ID.
func startAPIServerPID(t *testing.T, extraArgs ...string) (url, token string, pid int) {
	t.Helper()
	db := pgtest.New(t, false)
	dir := t.TempDir()
	token = "cli-admin-token"
	os.WriteFile(filepath.Join(dir, "admin"), []byte(token), 0o600)
	os.WriteFile(filepath.Join(dir, "internal"), []byte("cli-internal-token"), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"apiserver", "--listen=" + addr, "--db.url=" + db.URL,
		"--admin.tokenfile=" + filepath.Join(dir, "admin"), "--internal.tokenfile=" + filepath.Join(dir, "internal"), "--draindelay=0s"}
	if !slices.ContainsFunc(extraArgs, func(a string) bool { return strings.HasPrefix(a, "--store.dir=") }) {
		args = append(args, "--store.dir="+filepath.Join(dir, "store"))
	}
	args = append(args, extraArgs...)
	cmd := exec.CommandContext(ctx, binPath, args...)
	logf, _ := os.Create(filepath.Join(dir, "apiserver.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			t.Logf("apiserver log:\n%s", b)
		}
	})
	url = "http://" + addr
	for i := 0; i < 100; i++ {
		if _, _, code := runBin(t, nil, "healthcheck", url+"/readyz"); code == 0 {
			return url, token, cmd.Process.Pid
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("apiserver never became ready")
	return
}

// cliStep is one CLI call, its exit code and a part of its output.
type cliStep struct {
	args []string
	code int
	want string
}

// cliSession starts an apiserver and returns the CLI's environment for it
// and the sentiment fixture's folder (skipping without it).
func cliSession(t *testing.T) (env []string, fixture string) {
	t.Helper()
	url, token := startAPIServer(t)
	fixture, _ = filepath.Abs(filepath.Join("..", "..", "..", "shared", "fixtures", "nlp", "sentiment"))
	if _, err := os.Stat(fixture); err != nil {
		t.Skipf("fixture absent: %v", err)
	}
	return []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}, fixture
}

// runSteps runs the steps in order, stopping at the first that differs.
func runSteps(t *testing.T, env []string, steps []cliStep) {
	t.Helper()
	for _, s := range steps {
		stdout, stderr, code := runBin(t, env, s.args...)
		if code != s.code || !strings.Contains(stdout+stderr, s.want) {
			t.Fatalf("nlpswarm %v: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", s.args, code, s.code, stdout, stderr, s.want)
		}
	}
}

func TestCLIAgainstAPIServer(t *testing.T) {
	env, fixture := cliSession(t)
	url := strings.TrimPrefix(env[0], "NLPSWARM_SERVER=")
	runSteps(t, env, []cliStep{
		{[]string{"models", "ls"}, 0, "NAME"},
		{[]string{"models", "create", "sentiment", "--task", "text-classification"}, 0, "created model sentiment"},
		{[]string{"models", "create", "Bad", "--task", "text-classification"}, 1, "name must match"},
		{[]string{"models", "ls", "--json"}, 0, `"name": "sentiment"`},
		{[]string{"models", "versions", "nope"}, 3, "not found"},
		{[]string{"deploy", "sentiment", "--replicas", "2"}, 1, "no such version"},
		{[]string{"models", "push", "sentiment", fixture}, 0, "pushed sentiment version 1: sha256:"},
		{[]string{"models", "push", "sentiment", "/nonexistent"}, 2, "holds none of"},
		{[]string{"models", "versions", "sentiment"}, 0, "ready"},
		{[]string{"deploy", "sentiment", "--replicas", "2", "--memory", "512M"}, 0, "deploy: sentiment version 1, 2 replica(s), generation 1"},
		{[]string{"scale", "sentiment", "3"}, 0, "generation 2"},
		{[]string{"status", "sentiment"}, 0, "0/3"},
		{[]string{"deploy", "sentiment", "--memory", "lots"}, 2, "bad size"},
		{[]string{"scale", "sentiment", "x"}, 2, "replicas must be a number"},
		{[]string{"accounts", "create", "acme", "--plan", "standard"}, 0, "created account 1 acme"},
		{[]string{"accounts", "ls"}, 0, "acme"},
		{[]string{"keys", "create", "1", "--name", "ci"}, 0, "nlp_"},
		{[]string{"keys", "ls", "1"}, 0, "active"},
		{[]string{"keys", "revoke", "1", "1"}, 0, "revoked key 1"},
		{[]string{"keys", "ls", "1"}, 0, "revoked"},
		{[]string{"usage"}, 0, "DAY"},
		{[]string{"usage"}, 0, "OUTPUT TOKENS"},
		{[]string{"nodes"}, 0, "HOSTNAME"},
		{[]string{"status"}, 0, "MODEL"},
		{[]string{"models", "frob"}, 2, "unknown models sub-command"},
		{[]string{"deploy"}, 2, "usage"},
	})
	// no token: usage error, nothing sent
	if _, stderr, code := runBin(t, []string{"NLPSWARM_SERVER=" + url}, "models", "ls"); code != 2 || !strings.Contains(stderr, "no admin token") {
		t.Fatalf("without token: %d %s", code, stderr)
	}
	// a wrong token is refused by the server
	if _, stderr, code := runBin(t, []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=wrong"}, "models", "ls"); code != 1 || !strings.Contains(stderr, "401") {
		t.Fatalf("wrong token: %d %s", code, stderr)
	}
}
