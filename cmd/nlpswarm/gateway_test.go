//go:build !agentonly

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The gateway's flags come from gateway.Config itself now: every flag the
// role had when its settings were copied into cmd is still there, by the
// same name (deployments and operators use them), and the settings the
// copy left unreachable are flags too, as is the upstream client choice.
func TestGatewayFlagsStable(t *testing.T) {
	out, _, code := runBin(t, nil, "gateway", "--help")
	if code != 0 {
		t.Fatalf("gateway --help exit %d", code)
	}
	for _, flag := range []string{"--balancer", "--catalogrefresh", "--configfile", "--db.conntimeout", "--db.maxconns", "--db.passwordfile", "--db.url", "--deadreplicaafter", "--discovery", "--discoveryinterval", "--draindelay", "--ejectafter", "--gatewayid", "--gcpercent", "--holdmax", "--holdpoll", "--holdretryafter", "--idleconntimeout", "--idletimeout", "--keycachettl", "--limitsync", "--listen", "--loadreport", "--loglevel", "--maxbodybytes", "--maxtexts", "--modeltimeouts", "--opslisten", "--probeinterval", "--readheadertimeout", "--readtimeout", "--redis.addr", "--redis.db", "--redis.dialtimeout", "--redis.passwordfile", "--redisprefix", "--shutdowntimeout", "--static.upstreams", "--timeout", "--upstreamport", "--usageflush", "--wakecoalesce", "--writetimeout",
		"--wakeresend", "--redis.timeout", "--upstream", "--keysecretfile", "--callsecretfile"} {
		if !strings.Contains(out, "  "+flag+" ") {
			t.Errorf("gateway --help lacks %s:\n%s", flag, out)
		}
	}
}

// A refused setting is one line naming its flag, before anything connects.
func TestGatewayBadSettings(t *testing.T) {
	short := filepath.Join(t.TempDir(), "keysecret")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ arg, want string }{
		{"--keycachettl=3s", "--keycachettl"},
		{"--modeltimeouts=slow", "--modeltimeouts"},
		{"--balancer=random", "--balancer"},
		{"--discovery=static", "--static.upstreams"},
		{"--upstream=curl", "--upstream"},
		{"--keysecretfile=" + short, "--keysecretfile"},
		{"--keysecretfile=/nonexistent/keysecret", "/nonexistent/keysecret"},
		{"--callsecretfile=" + short, "--callsecretfile"},
		{"--callsecretfile=/nonexistent/callsecret", "/nonexistent/callsecret"},
	} {
		_, stderr, code := runBin(t, nil, "gateway", c.arg, "--db.url=postgres://u@127.0.0.1:1/x?sslmode=disable")
		if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q", c.arg, code, stderr)
		}
	}
}
