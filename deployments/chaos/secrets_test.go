package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// scenarioSecrets checks, on the running stack after every fault above, that
// no secret value appears where operators and customers look: docker
// service inspect of every service (the stack's and the models'), docker
// inspect of every container on every node, every service's logs, the
// error answers of wrong credentials, /readyz, /metrics and Prometheus'
// targets. The secrets are five Docker secrets (database password, admin
// token, internal token, replica call secret, scheduler read token) and the
// customer's API key.
func scenarioSecrets(t *testing.T, s *stack, rep *report) {
	secrets := map[string]string{}
	for _, name := range []string{"db_password", "admin_token", "internal_token", "replica_call_secret", "scheduler_read_token"} {
		b, err := os.ReadFile(filepath.Join(s.state, name))
		must(t, err)
		secrets[name] = strings.TrimSpace(string(b))
	}
	// the key's secret part (its prefix is public: logs carry it)
	secrets["api key"] = s.key[strings.LastIndex(s.key, "_")+1:]
	for name, v := range secrets {
		if len(v) < 16 {
			t.Fatalf("secret %s is too short to search for (%d chars)", name, len(v))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var sources []string
	scanned := 0
	check := func(where, text string) {
		scanned += len(text)
		sources = append(sources, where)
		for name, v := range secrets {
			// the whole value, or a long piece of it (a truncated echo)
			if strings.Contains(text, v) || strings.Contains(text, v[:16]) || strings.Contains(text, v[len(v)-16:]) {
				t.Errorf("secret %s appears in %s", name, where)
			}
		}
	}
	m := s.lab.Manager()
	svcs, err := m.Docker(ctx, "service", "ls", "-q")
	must(t, err)
	for _, id := range strings.Fields(svcs) {
		out, err := m.Docker(ctx, "service", "inspect", id)
		must(t, err)
		name := id
		if i := strings.Index(out, `"Name": "`); i >= 0 {
			name = strings.SplitN(out[i+9:], `"`, 2)[0]
		}
		check("docker service inspect "+name, out)
		logs, _ := m.DockerCombined(ctx, "service", "logs", "--raw", id)
		check("docker service logs "+name, logs)
	}
	secretIDs, err := m.Docker(ctx, "secret", "ls", "-q")
	must(t, err)
	for _, id := range strings.Fields(secretIDs) {
		out, err := m.Docker(ctx, "secret", "inspect", id)
		must(t, err)
		check("docker secret inspect "+id, out)
	}
	for _, n := range s.lab.Nodes {
		ids, err := n.Docker(ctx, "ps", "-aq")
		must(t, err)
		for _, id := range strings.Fields(ids) {
			out, err := n.Docker(ctx, "inspect", id)
			if err == nil {
				check(fmt.Sprintf("docker inspect %s on %s", id, n.Name), out)
			}
			logs, _ := n.DockerCombined(ctx, "logs", id)
			check(fmt.Sprintf("docker logs %s on %s", id, n.Name), logs)
		}
	}
	// error answers of wrong or partial credentials (a server that echoes
	// what it compared against would show the real one)
	get := func(method, url, auth string) string {
		req, _ := http.NewRequest(method, url, strings.NewReader(`{"text":"x"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var hdr strings.Builder
		resp.Header.Write(&hdr)
		return resp.Status + "\n" + hdr.String() + string(b)
	}
	for _, c := range []struct{ method, url, auth string }{
		{"GET", s.api + "/api/v1/models", "Bearer wrong-" + secrets["admin_token"][:8]},
		{"GET", s.api + "/api/v1/models", ""},
		{"GET", s.api + "/internal/blobs/sha256:" + strings.Repeat("0", 64), "Bearer " + secrets["admin_token"]},
		{"GET", s.api + "/internal/blobs/sha256:" + strings.Repeat("0", 64), "Bearer nope"},
		{"POST", s.gateway + "/v1/sentiment/sentiment", "Token " + s.key[:len(s.key)-4] + "abcd"},
		{"POST", s.gateway + "/v1/sentiment/sentiment", "Token nlp_zzzzzzzz_" + strings.Repeat("a", 32)},
		{"GET", s.api + "/readyz", ""},
		{"GET", s.gateway + "/readyz", ""},
		{"GET", s.api + "/metrics", ""},
		{"GET", s.gwOps + "/metrics", ""},
		{"GET", "http://" + m.Addr + ":9090/api/v1/targets", ""},
	} {
		check(c.method+" "+strings.TrimPrefix(c.url, "http://"), get(c.method, c.url, c.auth))
	}
	// the CLI's error message with a wrong token
	wrong := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(wrong, []byte("wrong-"+secrets["admin_token"][:8]), 0o600))
	out, _ := s.cli(30*time.Second, "models", "ls", "--tokenfile", wrong)
	check("nlpswarm models ls (wrong token)", out)
	t.Logf("no secret in %d sources (%.1f MiB): service inspect/logs of every service, inspect/logs of every container on %d nodes, error answers, /readyz, /metrics, Prometheus targets",
		len(sources), float64(scanned)/(1<<20), len(s.lab.Nodes))
	if !t.Failed() {
		rep.add(row{"secrets never shown", "-", "searched after all the faults above",
			"-", fmt.Sprintf("DB password, admin and internal tokens, an API key: in none of %d sources (%.1f MiB): `docker service inspect` and logs of every service, `docker inspect` and logs of every container, error answers to wrong credentials, /readyz, /metrics, Prometheus targets", len(sources), float64(scanned)/(1<<20))})
	}
}
