package apiserver

import (
	"context"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Issue 14: the deployment API takes the inference engine (go, ort, or the
// platform's default), refuses any other with 400 invalid_request and
// nothing written, and shows the engine asked for and the one the scheduler
// resolved.
func TestDeploymentBackend(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.seedSentimentV1()
	put := func(body map[string]any) (int, map[string]any) {
		return e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, body)
	}
	code, d := put(map[string]any{})
	if code != 200 || d["backend"] != "" || d["effective_backend"] != "" {
		t.Fatalf("default: %d %v", code, d)
	}
	code, d = put(map[string]any{"backend": "ort"})
	if code != 200 || d["backend"] != "ort" || d["effective_backend"] != "ort" {
		t.Fatalf("ort: %d %v", code, d)
	}
	// a string not an engine is invalid_request; not a string at all, the
	// body's invalid_json like every mistyped field
	for _, bad := range []struct {
		v    any
		code string
	}{{"ORT", "invalid_request"}, {"auto", "invalid_request"}, {"onnxruntime", "invalid_request"}, {1, "invalid_json"}, {true, "invalid_json"}} {
		code, body := put(map[string]any{"backend": bad.v})
		errObj, _ := body["error"].(map[string]any)
		if code != 400 || errObj == nil || errObj["code"] != bad.code {
			t.Errorf("backend %v: %d %v, want 400 %s", bad.v, code, body, bad.code)
		} else if bad.code == "invalid_request" && !strings.Contains(errObj["message"].(string), `"go", "ort"`) {
			t.Errorf("backend %v: message %q does not say what is accepted", bad.v, errObj["message"])
		}
	}
	code, d = e.do("GET", "/api/v1/models/sentiment/deployment", adminTok, nil)
	if code != 200 || d["backend"] != "ort" || d["generation"].(float64) != 2 {
		t.Fatalf("a refused backend changed the deployment: %d %v", code, d)
	}
	// back to the default; the scheduler resolved it to go
	if code, d = put(map[string]any{"backend": ""}); code != 200 || d["backend"] != "" {
		t.Fatalf("back to the default: %d %v", code, d)
	}
	if err := deployment.WriteStatus(ctx, e.db.Pool, "sentiment", int64(d["generation"].(float64)), deployment.StatusRunning, "",
		&deployment.Observed{Backend: "go"}); err != nil {
		t.Fatal(err)
	}
	code, d = e.do("GET", "/api/v1/models/sentiment/deployment", adminTok, nil)
	if code != 200 || d["backend"] != "" || d["effective_backend"] != "go" {
		t.Fatalf("resolved default: %d %v", code, d)
	}
}
