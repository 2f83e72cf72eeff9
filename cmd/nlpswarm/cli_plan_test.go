//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/scheduler"
)

// `nlpswarm status --plan` shows what the reconciler would do now, through
// the apiserver relaying a scheduler's dry run computed on real Postgres and
// the real engine, and does none of it.
func TestCLIStatusPlan(t *testing.T) {
	ctx := context.Background()
	cl := dockertest.Swarm(t)
	db := pgtest.New(t, true)
	for _, q := range []string{
		`INSERT INTO models (name, task) VALUES ('fresh', 'text-classification'), ('big', 'feature-extraction'), ('onort', 'text-classification')`,
		`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:aa', 10, task FROM models`,
		`INSERT INTO deployments (model_id, version, replicas) SELECT id, 1, 2 FROM models WHERE name = 'fresh'`,
		`INSERT INTO deployments (model_id, version, replicas, gpus, gpu_memory_bytes) SELECT id, 1, 1, 1, 8589934592 FROM models WHERE name = 'big'`,
		// issue 14: ort asked for, and this scheduler has no ORT image
		`INSERT INTO deployments (model_id, version, replicas, backend) SELECT id, 1, 1, 'ort' FROM models WHERE name = 'onort'`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	owner := dockertest.Name("plan") // no service of the swarm is this test's
	rec := &scheduler.Reconciler{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler),
		Spec: scheduler.SpecConfig{Owner: owner, Image: "sha256:" + strings.Repeat("0", 64), Network: "none"}}
	// the scheduler's /plan requires its read token, which the apiserver
	// reads from its file and sends (issue 17)
	readToken := filepath.Join(t.TempDir(), "scheduler_read_token")
	if err := os.WriteFile(readToken, []byte("cli-scheduler-read-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sched := httptest.NewServer(rec.PlanHandler("cli-scheduler-read-token"))
	defer sched.Close()
	url, token, _ := startAPIServerPID(t, "--scheduler.url="+sched.URL, "--scheduler.tokenfile="+readToken)
	env := []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}

	runSteps(t, env, []cliStep{
		{args: []string{"status", "--plan"}, want: "the reconciler would make 3 change(s)"},
		{args: []string{"status", "--plan"}, want: "nlp-fresh: new: version 1, 2 replica(s) on go"},
		{args: []string{"status", "--plan"}, want: "BACKEND"},
		{args: []string{"status", "--plan", "onort"}, want: "no ONNX Runtime image"},
		{args: []string{"status", "--plan"}, want: "no node with 1 GPU(s) of 8 GiB free GPU memory"},
		{args: []string{"status", "--plan", "big"}, want: "unplaceable"},
		{args: []string{"status", "--plan", "a", "b"}, code: codeUsage, want: "usage"},
	})
	stdout, _, code := runBin(t, env, "status", "--plan", "fresh")
	if code != 0 || strings.Contains(stdout, "big") || !strings.Contains(stdout, "create") {
		t.Fatalf("status --plan fresh: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runBin(t, env, "status", "--plan", "--json")
	var p scheduler.Plan
	if err := json.Unmarshal([]byte(stdout), &p); code != 0 || err != nil || len(p.Creates) != 1 || len(p.Unplaceable) != 2 || p.Creates[0].Backend != "go" {
		t.Fatalf("status --plan --json: exit %d %v\n%s", code, err, stdout)
	}

	// a dry run: no service, no status, no GPU assignment
	list, err := cl.ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", scheduler.LabelOwner+"="+owner)})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("services after a dry run: %v %v", list.Items, err)
	}
	var touched int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM deployments WHERE status <> 'pending' OR observed_at IS NOT NULL`).Scan(&touched); err != nil || touched != 0 {
		t.Fatalf("%d deployment(s) written by a dry run (%v)", touched, err)
	}
}

// Without a reachable scheduler the dry run answers 503 with the error
// envelope, and the CLI says so.
func TestCLIStatusPlanSchedulerDown(t *testing.T) {
	url, token, _ := startAPIServerPID(t, "--scheduler.url=http://127.0.0.1:1")
	env := []string{"NLPSWARM_SERVER=" + url, "NLPSWARM_TOKEN=" + token}
	_, stderr, code := runBin(t, env, "status", "--plan")
	if code == 0 || !strings.Contains(stderr, "the scheduler is unreachable") {
		t.Fatalf("status --plan with the scheduler down: exit %d\n%s", code, stderr)
	}
}
