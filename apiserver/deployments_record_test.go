package apiserver

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// The nodes API shows what the scheduler placed on each GPU from the
// deployment record's GPU assignments, and a deployment's observed replicas
// as the record holds them.
func TestNodesAndDeploymentFromTheRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO nodes (id, hostname, availability, state) VALUES ('n1', 'ml-1', 'active', 'ready')`,
		`INSERT INTO gpus (node_id, uuid, idx, name, memory_total, memory_free) VALUES ('n1', 'GPU-a', 0, 'FAKE GPU (test row)', 1000, 1000), ('n1', 'GPU-b', 1, 'FAKE GPU (test row)', 1000, 1000)`,
		`INSERT INTO models (name, task) VALUES ('big', 'feature-extraction')`,
		`INSERT INTO deployments (model_id, version, replicas, gpus, gpu_memory_bytes) SELECT id, 1, 1, 1, 300 FROM models`,
	} {
		if _, err := e.db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := deployment.AssignGPUs(ctx, e.db.Pool, "big", []deployment.GPUAssignment{{Node: "n1", GPU: "GPU-b", Memory: 300}}); err != nil {
		t.Fatal(err)
	}
	obs := &deployment.Observed{Running: 1, Desired: 1, Tasks: []deployment.TaskState{{Slot: 1, Node: "ml-1", State: "running"}}}
	if err := deployment.WriteStatus(ctx, e.db.Pool, "big", 1, deployment.StatusRunning, "1 of 1 replicas running", obs); err != nil {
		t.Fatal(err)
	}

	code, body := e.do("GET", "/api/v1/nodes", adminTok, nil)
	if code != 200 {
		t.Fatalf("nodes: %d %v", code, body)
	}
	raw, _ := json.Marshal(body["nodes"])
	var nodes []Node
	if err := json.Unmarshal(raw, &nodes); err != nil || len(nodes) != 1 || len(nodes[0].GPUs) != 2 {
		t.Fatalf("nodes: %s %v", raw, err)
	}
	if a, b := nodes[0].GPUs[0], nodes[0].GPUs[1]; len(a.Placed) != 0 || len(b.Placed) != 1 || b.Placed[0] != (GPUPlacement{Model: "big", MemoryBytes: 300}) {
		t.Fatalf("placed: %+v / %+v", a.Placed, b.Placed)
	}

	code, body = e.do("GET", "/api/v1/models/big/deployment", adminTok, nil)
	raw, _ = json.Marshal(body)
	var d Deployment
	if err := json.Unmarshal(raw, &d); code != 200 || err != nil || d.Status != "running" || d.Observed.Running != 1 ||
		d.Observed.Tasks[0].Node != "ml-1" || d.GPUs != 1 || d.Autoscale != nil {
		t.Fatalf("deployment: %d %s", code, raw)
	}
	if code, body := e.do("GET", "/api/v1/models/nope/deployment", adminTok, nil); code != 404 {
		t.Fatalf("missing deployment: %d %v", code, body)
	}
	// no scheduler configured: the dry run says so
	if code, body := e.do("GET", "/api/v1/plan", adminTok, nil); code != 503 {
		t.Fatalf("plan without a scheduler: %d %v", code, body)
	}
}
