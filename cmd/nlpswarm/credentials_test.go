//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 17: the flags that carry the runtimes' call credential and the
// scheduler's read token, on every role that holds one of them, and the
// scheduler refusing a short or missing secret before it connects.
func TestCredentialFlags(t *testing.T) {
	for role, flags := range map[string][]string{
		"runtime":   {"--callcredential"},
		"scheduler": {"--callsecretfile", "--readtokenfile"},
		"gateway":   {"--callsecretfile"},
		"apiserver": {"--scheduler.tokenfile"},
	} {
		out, _, code := runBin(t, nil, role, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d", role, code)
		}
		for _, f := range flags {
			if !strings.Contains(out, "  "+f+" ") {
				t.Errorf("%s --help lacks %s:\n%s", role, f, out)
			}
		}
	}
	short := filepath.Join(t.TempDir(), "callsecret")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--callsecretfile=" + short, "--readtokenfile="}, "--callsecretfile"},
		{[]string{"--callsecretfile=/nonexistent/callsecret", "--readtokenfile="}, "/nonexistent/callsecret"},
		{[]string{"--callsecretfile=", "--readtokenfile=/nonexistent/readtoken"}, "/nonexistent/readtoken"},
	} {
		args := append([]string{"scheduler", "--internaltokenfile=", "--db.url=postgres://u@127.0.0.1:1/x?sslmode=disable", "--db.conntimeout=200ms"}, c.args...)
		_, stderr, code := runBin(t, nil, args...)
		if code == 0 || !strings.Contains(stderr, c.want) || strings.Contains(stderr, "postgres") {
			t.Errorf("scheduler %v: exit %d, stderr %q", c.args, code, stderr)
		}
	}
}
