package models

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/coldstart"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// Issue 17: a runtime answers inference and metadata only to the holder of
// its model's call credential (the gateway); any other container on the
// runtimes' overlay, another model's runtime included, gets 401. Health,
// readiness and metrics stay open for Docker's healthcheck, the gateway's
// probes and Prometheus.
func TestRuntimeRequiresItsCallCredential(t *testing.T) {
	key, err := artifactcred.CallKey(strings.Repeat("k", artifactcred.MinCallSecret))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := artifactcred.CallKey(strings.Repeat("o", artifactcred.MinCallSecret))
	own := artifactcred.Call(key, "sentiment")
	b := NewBatcher(&slowFake{}, DefaultBatchConfig(), NewMetrics(nil))
	ctx := t.Context()
	go b.Run(ctx)
	s := NewServer("sentiment", TextClassification, "sha256:test", b, DefaultLimits(), NewMetrics(nil), slog.New(slog.DiscardHandler))
	s.SetReady(true)
	s.SetColdStart(coldstart.Report{Model: "sentiment"})
	s.SetCallCredential(own)
	reg := httpserver.NewRegistry()
	hs := httptest.NewServer(httpserver.Handler(s, httpserver.NewHealth(), reg))
	t.Cleanup(hs.Close)

	predict := `{"texts":["i love this movie"]}`
	infer := `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["great"]}]}`
	guarded := []struct{ method, path, body string }{
		{"POST", "/predict", predict},
		{"POST", "/v2/models/sentiment/infer", infer},
		{"GET", "/v2/models/sentiment", ""},
		{"GET", "/v2", ""},
		{"GET", "/coldstart", ""},
	}
	do := func(method, path, body, auth string) (int, apierror.Body) {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apierror.Body
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	refused := map[string]string{
		"no credential":                     "",
		"another model's credential":        bearer.Header(artifactcred.Call(key, "ner")),
		"its model's, from another secret":  bearer.Header(artifactcred.Call(otherKey, "sentiment")),
		"the credential cut short":          bearer.Header(own[:len(own)-1]),
		"the credential as an API key":      "Basic " + own,
		"the artifact credential mechanism": bearer.Header(artifactcred.Mint(artifactcred.Key(strings.Repeat("k", artifactcred.MinCallSecret)), "sha256:"+strings.Repeat("a", 64), time.Now().Add(time.Hour))),
	}
	for _, g := range guarded {
		for name, auth := range refused {
			if code, e := do(g.method, g.path, g.body, auth); code != http.StatusUnauthorized || e.Error.Code != bearer.Code {
				t.Errorf("%s %s with %s: %d %+v, want 401 %s", g.method, g.path, name, code, e, bearer.Code)
			}
		}
		if code, e := do(g.method, g.path, g.body, bearer.Header(own)); code != http.StatusOK {
			t.Errorf("%s %s with its credential: %d %+v", g.method, g.path, code, e)
		}
	}
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/sentiment/ready", "/healthz", "/readyz", "/metrics"} {
		if code, _ := do("GET", path, "", ""); code != http.StatusOK {
			t.Errorf("GET %s without a credential: %d, want 200 (healthchecks, probes and Prometheus carry none)", path, code)
		}
	}

	// no credential set (a runtime started by hand, tests): open
	open := NewServer("sentiment", TextClassification, "sha256:test", b, DefaultLimits(), NewMetrics(nil), slog.New(slog.DiscardHandler))
	open.SetReady(true)
	w := httptest.NewRecorder()
	open.ServeHTTP(w, httptest.NewRequest("POST", "/predict", strings.NewReader(predict)))
	if w.Code != http.StatusOK {
		t.Fatalf("a runtime without a credential: %d %s", w.Code, w.Body)
	}
}
