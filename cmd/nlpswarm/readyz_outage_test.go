//go:build !agentonly

package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/faultproxy"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// issue 18: Swarm's healthcheck of the apiserver calls /readyz; with
// Postgres down it must still pass (the body says degraded), or Swarm kills
// the apiserver 25 s into a database outage and it cannot start again until
// Postgres is back. The API itself fails cleanly meanwhile, and /readyz says
// ready again once the database is back. The scheduler and the agent use
// the same check (postgresCheck).
func TestAPIServerReadyzThroughPostgresOutage(t *testing.T) {
	db := pgtest.New(t, false)
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.New(t, u.Host)
	u.Host = proxy.Addr()
	// startAPIServerPID makes a database of its own; point it at ours,
	// through the proxy (a later --db.url wins)
	base, token, _ := startAPIServerPID(t, "--db.url="+u.String())
	readyz := func() (string, int) {
		stdout, stderr, code := runBin(t, nil, "healthcheck", base+"/readyz")
		return stdout + stderr, code
	}
	body := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := body("/readyz"); code != 200 || !strings.Contains(b, `"ready"`) {
		t.Fatalf("before the outage: %d %s", code, b)
	}
	proxy.Cut()
	if out, code := readyz(); code != 0 {
		t.Fatalf("healthcheck fails with Postgres down (Swarm would kill the apiserver): exit %d %s", code, out)
	}
	if code, b := body("/readyz"); code != 200 || !strings.Contains(b, `"degraded"`) || !strings.Contains(b, "postgres unreachable") {
		t.Errorf("/readyz with Postgres down: %d %s, want 200 degraded naming postgres", code, b)
	}
	if code, b := body("/api/v1/models"); code < 500 || !strings.Contains(b, `"error"`) {
		t.Errorf("API with Postgres down: %d %s, want a 5xx API error", code, b)
	}
	proxy.Restore()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, b := body("/readyz")
		if code == 200 && strings.Contains(b, `"ready"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after Postgres is back: %d %s", code, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, b := body("/api/v1/models"); code != 200 {
		t.Errorf("API after Postgres is back: %d %s", code, b)
	}
}
