package client_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
)

// The Python client's job calls against the real gateway, and its webhook
// verification against the Go signer.
const pythonJobsScript = `
import json, sys
import nlpswarm
url, key, secret, sig, body = sys.argv[1:6]
c = nlpswarm.Client(url, key)
job = c.create_job("sentiment", "sentiment", ["a", "b", "c"])
done = c.wait_job(job["id"], interval=0.05, timeout=60)
items = list(c.job_results(job["id"], limit=2))
try:
    c.cancel_job(job["id"])
    cancel = "no error"
except nlpswarm.Error as e:
    cancel = e.code
print(json.dumps({
    "state": done["state"], "done": done["done"], "indexes": [i["index"] for i in items],
    "labels": items[0]["result"]["scored_labels"][0]["label"], "cancel": cancel,
    "secret": c.webhook_secret().startswith("whsec_"),
    "verified": nlpswarm.verify_webhook(secret, sig, body.encode()),
    "tampered": nlpswarm.verify_webhook(secret, sig, body.encode() + b" "),
}))
`

func TestPythonClientJobs(t *testing.T) {
	py := python(t)
	body := `{"type":"job.succeeded"}`
	secret := "whsec_test"
	signature := customerapi.SignWebhook(secret, time.Now(), []byte(body)) // as the gateway signs
	got := runPython(t, py, pythonJobsScript, shared.URL, shared.Key, secret, signature, body)
	want := `{"cancel":"job_finished","done":3,"indexes":[0,1,2],"labels":"POSITIVE","secret":true,"state":"succeeded","tampered":false,"verified":true}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Fatalf("python jobs: %s, want %s", b, want)
	}
}

// runPython runs script with the client on its path and decodes the JSON
// it prints.
func runPython(t *testing.T, py, script string, args ...string) map[string]any {
	t.Helper()
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join("..", "clients", "python"), "PYTHONDONTWRITEBYTECODE=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("python printed %s: %v", raw, err)
	}
	return got
}
