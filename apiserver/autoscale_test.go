package apiserver

import (
	"context"
	"strings"
	"testing"
)

// TestAutoscaledDeployment: the deployment API takes an autoscale object
// (defaults filled, bounds checked), clamps the starting count into the
// bounds, keeps the autoscaler's count across a redeploy that names none,
// makes a manual scale set the floor, and shows the recent cold starts.
func TestAutoscaledDeployment(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.seedSentimentV1()
	put := func(body map[string]any) (int, map[string]any) {
		return e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, body)
	}
	for _, bad := range []map[string]any{
		{"autoscale": map[string]any{"min": 5, "max": 4}},
		{"autoscale": map[string]any{"max": 0}},
		{"autoscale": map[string]any{"max": 101}},
		{"autoscale": map[string]any{"max": 4, "target_inflight": -1}},
		{"autoscale": map[string]any{"max": 4, "idle_to_zero": "forever"}},
		{"autoscale": map[string]any{"max": 4, "scale_down_delay": "1ms"}},
		{"autoscale": map[string]any{"max": 4, "unknown": 1}},
	} {
		if code, body := put(bad); code != 400 {
			t.Errorf("%v: %d %v, want 400", bad, code, body)
		}
	}

	// GPU deployments autoscale (issue 16): deploy --gpus 1 --gpu-memory 8G --min 0 --max 4
	code, d := put(map[string]any{"autoscale": map[string]any{"min": 0, "max": 4}, "resources": map[string]any{"gpus": 1, "gpu_memory": "8G"}})
	if as, _ := d["autoscale"].(map[string]any); code != 200 || as == nil || as["max"].(float64) != 4 || d["gpus"].(float64) != 1 {
		t.Fatalf("deploy an autoscaled GPU model: %d %v", code, d)
	}

	code, d = put(map[string]any{"replicas": 0, "autoscale": map[string]any{"min": 0, "max": 4, "target_inflight": 2, "scale_down_delay": "10s", "idle_to_zero": 90}})
	as, _ := d["autoscale"].(map[string]any)
	if code != 200 || d["replicas"].(float64) != 0 || as == nil || as["max"].(float64) != 4 || as["target_inflight"].(float64) != 2 ||
		as["scale_down_delay"] != "10s" || as["idle_to_zero"] != "1m30s" || d["scale_reason"] != "deploy" {
		t.Fatalf("deploy autoscaled at zero: %d %v", code, d)
	}
	// defaults, and a starting count clamped into the bounds
	code, d = put(map[string]any{"replicas": 9, "autoscale": map[string]any{"max": 3}})
	as, _ = d["autoscale"].(map[string]any)
	if code != 200 || d["replicas"].(float64) != 3 || as["min"].(float64) != 0 || as["target_inflight"].(float64) != 4 ||
		as["scale_down_delay"] != "30s" || as["idle_to_zero"] != "5m0s" {
		t.Fatalf("deploy with defaults: %d %v", code, d)
	}
	// the autoscaler moved it to 2; a redeploy naming no count keeps 2
	if _, err := e.db.Pool.Exec(ctx, `UPDATE deployments SET replicas = 2`); err != nil {
		t.Fatal(err)
	}
	if code, d = put(map[string]any{"autoscale": map[string]any{"max": 4}}); code != 200 || d["replicas"].(float64) != 2 {
		t.Fatalf("redeploy without replicas: %d %v", code, d)
	}
	// manual scale sets the floor
	code, d = e.do("POST", "/api/v1/models/sentiment/scale", adminTok, map[string]any{"replicas": 3})
	as, _ = d["autoscale"].(map[string]any)
	if code != 200 || d["replicas"].(float64) != 3 || as["min"].(float64) != 3 || as["max"].(float64) != 4 || !strings.Contains(d["scale_reason"].(string), "floor") {
		t.Fatalf("scale an autoscaled deployment: %d %v", code, d)
	}
	// a deployment without autoscale reads null
	if code, d = put(map[string]any{"replicas": 1}); code != 200 || d["autoscale"] != nil {
		t.Fatalf("deploy without autoscale: %d %v", code, d)
	}

	// cold starts, newest first
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO replica_starts (task_id, deployment_id, slot, node, scheduled_at, started_at, fetch_seconds,
			artifact_bytes, artifact_cached, load_seconds, warmup_seconds, ready_at, running_at)
		SELECT 't1', id, 1, 'vm', now() - interval '1 minute', now() - interval '59 seconds', 0.2, 384000, false, 0.1, 0.05, now() - interval '58 seconds', now() - interval '57 seconds' FROM deployments
		UNION ALL SELECT 't2', id, 1, 'vm', now(), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM deployments`); err != nil {
		t.Fatal(err)
	}
	code, d = e.do("GET", "/api/v1/models/sentiment/deployment", adminTok, nil)
	cs, _ := d["cold_starts"].([]any)
	if code != 200 || len(cs) != 2 {
		t.Fatalf("cold starts: %d %v", code, d["cold_starts"])
	}
	newest, oldest := cs[0].(map[string]any), cs[1].(map[string]any)
	if newest["task_id"] != "t2" || newest["fetch_seconds"] != nil || oldest["artifact_bytes"].(float64) != 384000 || oldest["artifact_cached"] != false {
		t.Fatalf("cold starts: %v", cs)
	}
}
