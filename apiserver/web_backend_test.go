package apiserver

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Issue 14: the deploy form's engine select (refused with the reason when
// it is not an engine), and the deployments, model and nodes pages show each
// deployment's engine.
func TestWebBackend(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.seedSentimentV1()
	e.seed(
		`INSERT INTO nodes (id, hostname, availability, state) VALUES ('n1', 'ml-1', 'active', 'ready')`,
	)
	w, token := e.login()
	deploy := func(backend string) webResp {
		return w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "version": {"0"}, "replicas": {"1"}, "backend": {backend}})
	}
	if r := deploy("cuda"); r.status != 400 || !strings.Contains(r.body, "backend must be") || !strings.Contains(r.body, `role="alert"`) {
		t.Fatalf("deploy on an unknown engine: %d %s", r.status, r.body)
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("a refused engine wrote %d deployment(s)", n)
	}
	if r := deploy("ort"); r.status != http.StatusSeeOther {
		t.Fatalf("deploy on ort: %d %s", r.status, r.body)
	}
	if page := w.get("/ui/models/sentiment").body; !strings.Contains(page, `<option value="ort" selected>`) || !strings.Contains(page, "engine ort") {
		t.Errorf("model page: the deploy form does not show the engine asked for")
	}
	if page := w.get("/ui/deployments").body; !strings.Contains(page, `<dd class="backend">ort</dd>`) {
		t.Errorf("deployments page lacks the engine")
	}
	// back to the platform's default, which the scheduler resolved to go
	if r := deploy(""); r.status != http.StatusSeeOther {
		t.Fatalf("deploy on the default: %d %s", r.status, r.body)
	}
	if page := w.get("/ui/deployments").body; !strings.Contains(page, `<dd class="backend">default</dd>`) {
		t.Errorf("deployments page: an unresolved default is not shown as such")
	}
	r, err := deployment.Get(ctx, e.db.Pool, "sentiment")
	if err != nil {
		t.Fatal(err)
	}
	obs := &deployment.Observed{Running: 1, Desired: 1, Backend: "go", Tasks: []deployment.TaskState{{Slot: 1, Node: "ml-1", State: "running"}}}
	if err := deployment.WriteStatus(ctx, e.db.Pool, "sentiment", r.Generation, deployment.StatusRunning, "1 of 1 replicas running", obs); err != nil {
		t.Fatal(err)
	}
	if page := w.get("/ui/deployments").body; !strings.Contains(page, `<dd class="backend">go (default)</dd>`) {
		t.Errorf("deployments page lacks the resolved default engine")
	}
	if page := w.get("/ui/nodes").body; !strings.Contains(page, "sentiment</a> #1") || !strings.Contains(page, "engine go (default)") {
		t.Errorf("nodes page lacks the replica's engine")
	}
}
