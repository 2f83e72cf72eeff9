package apiserver

import (
	"net/http"
	"strings"
	"testing"
)

// canaryFixture pushes the sentiment fixture again as version 2 and deploys
// it as a 10 % sticky canary of webFixture's deployment, with a rule.
func canaryFixture(e *env) {
	t := e.t
	t.Helper()
	if code, body := e.upload("sentiment", tarGz(t, fixtureFiles(t, "sentiment"))); code != 201 {
		t.Fatalf("upload version 2: %d %v", code, body)
	}
	code, body := e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, map[string]any{"version": 2, "replicas": 1,
		"canary": map[string]any{"weight": 10, "sticky": true, "rollback": map[string]any{"max_error_rate": 0.05, "window": "30s"}}})
	if code != 200 {
		t.Fatalf("canary: %d %v", code, body)
	}
}

// The canary API: every refusal a clear 4xx, the status with both
// versions, promote and rollback.
func TestCanaryAPI(t *testing.T) {
	e := newEnv(t)
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"}); code != 201 {
		t.Fatalf("create model: %d %v", code, body)
	}
	for i := 0; i < 2; i++ {
		if code, body := e.upload("sentiment", tarGz(t, fixtureFiles(t, "sentiment"))); code != 201 {
			t.Fatalf("upload: %d %v", code, body)
		}
	}
	put := func(body map[string]any) (int, map[string]any) {
		return e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, body)
	}
	canary := func(v int, c map[string]any) map[string]any {
		return map[string]any{"version": v, "replicas": 1, "canary": c}
	}
	errCode := func(body map[string]any) string {
		e, _ := body["error"].(map[string]any)
		c, _ := e["code"].(string)
		return c
	}
	// a canary of a model not deployed
	if code, body := put(canary(2, map[string]any{"weight": 5})); code != http.StatusNotFound || !strings.Contains(body["error"].(map[string]any)["message"].(string), "not deployed") {
		t.Fatalf("canary of a model not deployed: %d %v", code, body)
	}
	if code, body := put(map[string]any{"version": 1, "replicas": 2}); code != 200 {
		t.Fatalf("deploy: %d %v", code, body)
	}
	for _, c := range []struct {
		name string
		body map[string]any
		want int
	}{
		{"a version that does not exist", canary(9, map[string]any{"weight": 5}), 400},
		{"the stable version itself", canary(1, map[string]any{"weight": 5}), 400},
		{"weight 0", canary(2, map[string]any{"weight": 0}), 400},
		{"weight above 100", canary(2, map[string]any{"weight": 150}), 400},
		{"a shadow with a weight", canary(2, map[string]any{"shadow": true, "weight": 5}), 400},
		{"a rule without a window", canary(2, map[string]any{"weight": 5, "rollback": map[string]any{"max_error_rate": 0.05}}), 400},
		{"an error rate above 1", canary(2, map[string]any{"weight": 5, "rollback": map[string]any{"max_error_rate": 5, "window": "30s"}}), 400},
	} {
		if code, body := put(c.body); code != c.want || errCode(body) == "" {
			t.Errorf("%s: %d %v, want %d", c.name, code, body, c.want)
		}
	}
	if code, body := e.do("POST", "/api/v1/models/sentiment/promote", adminTok, nil); code != 404 {
		t.Fatalf("promote without a canary: %d %v", code, body)
	}
	if code, body := e.do("POST", "/api/v1/models/sentiment/rollback", adminTok, nil); code != 404 {
		t.Fatalf("rollback without a canary: %d %v", code, body)
	}
	code, body := put(canary(2, map[string]any{"weight": 10, "sticky": true, "rollback": map[string]any{"max_error_rate": 0.05, "max_p99": "800ms", "window": "20s"}}))
	if code != 200 {
		t.Fatalf("canary: %d %v", code, body)
	}
	c, _ := body["canary"].(map[string]any)
	if body["version"] != 1.0 || c == nil || c["version"] != 2.0 || c["weight"] != 10.0 || c["sticky"] != true || c["state"] != "active" || c["mode"] != "canary" {
		t.Fatalf("status after the canary: %v", body)
	}
	if rb, _ := c["rollback"].(map[string]any); rb["max_error_rate"] != 0.05 || rb["max_p99"] != "800ms" || rb["window"] != "20s" {
		t.Fatalf("rule: %v", c["rollback"])
	}
	if code, body := put(canary(2, map[string]any{"shadow": true})); code != http.StatusConflict || errCode(body) != "conflict" {
		t.Fatalf("a second canary: %d %v", code, body)
	}
	// promote: stable takes version 2 and keeps its 2 replicas; promoting twice is a conflict
	code, body = e.do("POST", "/api/v1/models/sentiment/promote", adminTok, nil)
	if c, _ := body["canary"].(map[string]any); code != http.StatusAccepted || body["version"] != 2.0 || body["replicas"] != 2.0 || c["state"] != "promoting" {
		t.Fatalf("promote: %d %v", code, body)
	}
	if code, body := e.do("POST", "/api/v1/models/sentiment/promote", adminTok, nil); code != http.StatusConflict {
		t.Fatalf("promote twice: %d %v", code, body)
	}
	// rollback during the promote: version 1 again, the canary retired with why
	code, body = e.do("POST", "/api/v1/models/sentiment/rollback", adminTok, nil)
	if c, _ := body["canary"].(map[string]any); code != 200 || body["version"] != 1.0 || c["state"] != "rolled_back" || c["reason"] != "rolled back by an operator" || c["retired_at"] == nil {
		t.Fatalf("rollback: %d %v", code, body)
	}
	// the deployments page shows the canary, its rollout and why
	w, _ := e.login()
	page := w.get("/ui/deployments")
	for _, want := range []string{"Canary: version 2", "rolled_back", "rolled back by an operator", "10% of requests, sticky per API key",
		"error rate above 5.0% or p99 above 800ms over 20s"} {
		if page.status != 200 || !strings.Contains(page.body, want) {
			t.Fatalf("deployments page: %d, lacks %q", page.status, want)
		}
	}
	// a shadow now (the retired canary's row is replaced)
	code, body = put(canary(2, map[string]any{"shadow": true}))
	if c, _ := body["canary"].(map[string]any); code != 200 || c["mode"] != "shadow" || c["state"] != "active" || c["reason"] != "" {
		t.Fatalf("shadow: %d %v", code, body)
	}
}
