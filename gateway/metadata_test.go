package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// GET /v2/models/{model} through the gateway: the replica's metadata, which
// names the backend, for keys the infer route takes; another account's
// private model is not found, no key is refused, no replica is 503.
func TestModelMetadataThroughGateway(t *testing.T) {
	e := newEnv(t, false)
	acme, other := e.account("acme", "standard"), e.account("other", "standard")
	acmeKey, _ := e.key(acme, "inference")
	otherKey, _ := e.key(other, "inference")
	rt := newRuntime(t, "text-classification")
	rt.rt.SetBackend("ort")
	e.model("sentiment", "text-classification", 0, rt)
	e.model("secret", "text-classification", acme, newRuntimeWith(t, "text-classification", runtimeOpts{name: "secret"}))
	e.model("idle", "text-classification", 0)
	e.start(Config{})

	get := func(key, model string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.srv.URL+"/v2/models/"+model, nil)
		if key != "" {
			req.Header.Set("Authorization", "Token "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		return resp.StatusCode, body
	}
	code := func(b map[string]any) string {
		m, _ := b["error"].(map[string]any)
		s, _ := m["code"].(string)
		return s
	}
	st, b := get(otherKey, "sentiment")
	params, _ := b["parameters"].(map[string]any)
	if st != 200 || b["name"] != "sentiment" || params["backend"] != "ort" || params["task"] != "text-classification" {
		t.Fatalf("public model: %d %v", st, b)
	}
	if st, b := get(acmeKey, "secret"); st != 200 || b["name"] != "secret" {
		t.Errorf("owner on private model: %d %v", st, b)
	}
	if st, b := get(otherKey, "secret"); st != 404 || code(b) != "model_not_found" {
		t.Errorf("other tenant on private model: %d %v", st, b)
	}
	if st, b := get("", "sentiment"); st != 401 || code(b) != "unauthorized" {
		t.Errorf("no key: %d %v", st, b)
	}
	if st, b := get(acmeKey, "idle"); st != 503 || code(b) != "no_replica" {
		t.Errorf("no replica: %d %v", st, b)
	}
	if rt.hits.Load() != 0 {
		t.Errorf("a GET counted as %d inference hits", rt.hits.Load())
	}
}
