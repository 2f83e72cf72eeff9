package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/migrations"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nlpswarm-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "nlpswarm")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runBin(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestHelpListsRoles(t *testing.T) {
	out, _, code := runBin(t, nil, "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, role := range []string{"apiserver", "scheduler", "gateway", "runtime", "agent", "migrate"} {
		if !strings.Contains(out, "  "+role+" ") {
			t.Errorf("--help does not list role %s:\n%s", role, out)
		}
	}
	out, _, code = runBin(t, nil, "apiserver", "--help")
	if code != 0 {
		t.Fatalf("apiserver --help exit %d", code)
	}
	for _, opt := range []string{"--listen", "--db.url", "--db.passwordfile", "--admin.tokenfile", "--store.dir", "--configfile", "(default:"} {
		if !strings.Contains(out, opt) {
			t.Errorf("apiserver --help lacks %s:\n%s", opt, out)
		}
	}
}

// Bad configuration gives one clear line on stderr and a non-zero exit, never
// a stack trace.
func TestBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	malformed := filepath.Join(dir, "bad.yaml")
	os.WriteFile(malformed, []byte("listen: [\n"), 0o600)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("t0ken\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"apiserver", "--no-such-option=1"}, nil, "unknown flag"},
		{"unknown command", []string{"frobnicate"}, nil, "unknown command"},
		{"malformed file", []string{"apiserver", "--configfile", malformed}, nil, "config file"},
		{"missing config file", []string{"apiserver", "--configfile", filepath.Join(dir, "nope.yaml")}, nil, "config file"},
		{"missing secret file", []string{"apiserver", "--admin.tokenfile", filepath.Join(dir, "missing-secret")}, nil, "admin token file"},
		{"bad env value", []string{"apiserver"}, []string{"NLPSWARM_READTIMEOUT=eventually"}, "environment"},
		{"unreachable postgres", []string{"migrate", "up", "--db.url=postgres://u:pw-should-not-show@127.0.0.1:1/x?sslmode=disable", "--db.conntimeout=500ms"}, nil, "unreachable"},
		{"bad migrate verb", []string{"migrate", "sideways"}, nil, "unknown migrate command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBin(t, tt.env, tt.args...)
			if code == 0 {
				t.Fatalf("exit 0; stdout %q", stdout)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("stderr should be one line containing %q, got:\n%s", tt.want, stderr)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") || strings.Contains(stderr, "pw-should-not-show") {
				t.Fatalf("stderr has a stack trace or a secret:\n%s", stderr)
			}
		})
	}
}

func TestMigrateCommand(t *testing.T) {
	db := pgtest.New(t, false)
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) < 2 {
		t.Fatalf("migrations: %v %v", files, err)
	}
	sort.Strings(files)
	latest := files[len(files)-1]
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"up"}, "applied 00002_autoscale.sql"},
		{[]string{"status"}, "applied 20"},
		{[]string{"down", "--yes"}, "rolled back " + latest}, // one migration per down
		{[]string{"up"}, "applied " + latest},
		{[]string{"up"}, "schema is up to date"},
	} {
		out, stderr, code := runBin(t, nil, append([]string{"migrate"}, append(step.args, "--db.url="+db.URL)...)...)
		if code != 0 || !strings.Contains(out, step.want) {
			t.Fatalf("migrate %v: exit %d, stdout %q, stderr %q; want %q", step.args, code, out, stderr, step.want)
		}
	}
}

// issue 17 finding 8: migrate down asks first; with no answer (a script)
// or anything but "yes" it changes nothing.
func TestMigrateDownAsks(t *testing.T) {
	db := pgtest.New(t, true)
	applied := func() int {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM goose_db_version WHERE is_applied AND version_id > 0`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := applied()
	run := func(stdin string) (string, int) {
		cmd := exec.Command(binPath, "migrate", "down", "--db.url="+db.URL)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	for _, answer := range []string{"", "no\n", "y\n", "YES please\n"} {
		out, code := run(answer)
		if code == 0 || !strings.Contains(out, "Type yes") || !strings.Contains(out, "not confirmed") {
			t.Fatalf("answer %q: exit %d\n%s", answer, code, out)
		}
		if n := applied(); n != before {
			t.Fatalf("answer %q rolled back: %d migrations applied, was %d", answer, n, before)
		}
	}
	if out, code := run("yes\n"); code != 0 || !strings.Contains(out, "rolled back") {
		t.Fatalf("answer yes: exit %d\n%s", code, out)
	}
	if n := applied(); n != before-1 {
		t.Fatalf("after yes: %d migrations applied, want %d", n, before-1)
	}
}
