package client_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
)

// The Python client (clients/python/nlpswarm.py) is tested with Debian's
// python3 against the real gateway: the script below imports it, calls
// each task and the v2 route, provokes errors, and prints what it got as
// JSON for the test to check.
const pythonScript = `
import json, sys, time
import nlpswarm
url, key, slow_url, slow_key = sys.argv[1:5]
c = nlpswarm.Client(url, key)
out = {
    "sentiment": c.sentiment("sentiment", "great"),
    "classify": c.classify("sentiment", ["a", "b"], {"top_k": 1}),
    "entities": c.entities("ner", "Alice went home"),
    "embed": c.embed("embed", ["a", "abcd"]),
    "infer": c.infer("sentiment", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]}),
}
def err(f):
    try:
        f()
    except nlpswarm.Error as e:
        return {"status": e.status, "code": e.code, "request_id": e.request_id, "retry_after": e.retry_after, "retryable": e.retryable}
out["wrong_task"] = err(lambda: c.embed("sentiment", "x"))
out["bad_key"] = err(lambda: nlpswarm.Client(url, "nlp_zzzzzzzz_" + "a" * 32).sentiment("sentiment", "x"))
t = time.monotonic()
out["asleep"] = err(lambda: nlpswarm.Client(url, key, retries=1).sentiment("asleep", "x"))
out["asleep_seconds"] = time.monotonic() - t
slow = nlpswarm.Client(slow_url, slow_key)
slow.sentiment("sentiment", "x")
t = time.monotonic()
out["after_429"] = slow.sentiment("sentiment", "x")
out["after_429_seconds"] = time.monotonic() - t
out["no_retry_429"] = err(lambda: nlpswarm.Client(slow_url, slow_key, retries=0).sentiment("sentiment", "x"))
print(json.dumps(out))
`

func python(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3" // Debian's
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing under CI (.ci/run installs python3): %v", py, err)
		}
		t.Skipf("no %s: %v", py, err)
	}
	return py
}

func TestPythonClient(t *testing.T) {
	py := python(t)
	slow := gatewaytest.Start(t, gatewaytest.Options{Redis: true})
	got := runPython(t, py, pythonScript, shared.URL, shared.Key, slow.URL, slow.SlowKey)
	js := func(k string) string { b, _ := json.Marshal(got[k]); return string(b) }
	for k, want := range map[string]string{
		"sentiment":    `{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]}`,
		"entities":     `{"entities":[{"end":5,"score":0.99,"start":0,"text":"Alice","type":"PER"}]}`,
		"embed":        `[{"embeddings":[[0.1,0.2,1]]},{"embeddings":[[0.1,0.2,4]]}]`,
		"after_429":    `{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]}`,
		"wrong_task":   `{"code":"task_not_supported","request_id":"` + reqID(got, "wrong_task") + `","retry_after":null,"retryable":false,"status":400}`,
		"bad_key":      `{"code":"unauthorized","request_id":"` + reqID(got, "bad_key") + `","retry_after":null,"retryable":false,"status":401}`,
		"asleep":       `{"code":"no_replica","request_id":"` + reqID(got, "asleep") + `","retry_after":1,"retryable":true,"status":503}`,
		"no_retry_429": `{"code":"rate_limited","request_id":"` + reqID(got, "no_retry_429") + `","retry_after":1,"retryable":true,"status":429}`,
	} {
		if js(k) != want {
			t.Errorf("%s: %s, want %s", k, js(k), want)
		}
	}
	if c := js("classify"); !strings.HasPrefix(c, `[{"scored_labels":[{"label":"POSITIVE"`) || strings.Count(c, "scored_labels") != 2 {
		t.Errorf("classify: %s", c)
	}
	if i := js("infer"); !strings.Contains(i, `"model_name":"sentiment"`) || !strings.Contains(i, "POSITIVE") {
		t.Errorf("infer: %s", i)
	}
	// one retry of the 503 a Retry-After (1 s) later; the 429 waited for its Retry-After
	if s, _ := got["asleep_seconds"].(float64); s < 0.9 || s > 5 {
		t.Errorf("the 503 was retried after %.2fs, want its Retry-After (1s)", s)
	}
	if s, _ := got["after_429_seconds"].(float64); s < 0.9 || s > 5 {
		t.Errorf("the 429 was retried after %.2fs, want its Retry-After (1s)", s)
	}
}

func reqID(got map[string]any, k string) string {
	m, _ := got[k].(map[string]any)
	id, _ := m["request_id"].(string)
	if id == "" {
		return "(none)"
	}
	return id
}

// The command-line form prints the answer, or the error as JSON on stderr
// with exit status 1.
func TestPythonClientCommand(t *testing.T) {
	py := python(t)
	script := filepath.Join("..", "clients", "python", "nlpswarm.py")
	out, err := exec.Command(py, script, "--url", shared.URL, "--key", shared.Key, "ner", "entities", "Alice went home").Output()
	if err != nil || strings.TrimSpace(string(out)) != `{"entities": [{"text": "Alice", "type": "PER", "start": 0, "end": 5, "score": 0.99}]}` {
		t.Errorf("entities: %s %v", out, err)
	}
	cmd := exec.Command(py, script, "--url", shared.URL, "--key", shared.Key, "nope", "sentiment", "x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), `"code": "model_not_found"`) {
		t.Errorf("unknown model: %v %s", err, stderr.String())
	}
}
