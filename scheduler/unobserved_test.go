package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// noQuorum is a manager whose swarm lost its quorum: every call fails as
// the engine answers then.
type noQuorum struct{ Docker }

// errNoLeader is the engine's answer then (its text, as the lab saw it).
var errNoLeader = fmt.Errorf("%s", "Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.")

func (noQuorum) ServiceList(context.Context, client.ServiceListOptions) (client.ServiceListResult, error) {
	return client.ServiceListResult{}, errNoLeader
}

// A pass against a swarm without quorum marks every deployment unknown with
// Swarm's answer, keeps the replicas last observed and the generation last
// acted on, so a scale waiting to be applied says why (issue 18 item 4).
func TestPassWithoutQuorumSaysWhy(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO models (name, task) VALUES ('nq', 'text-classification')`)
	exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:` + strings.Repeat("a", 64) + `', 1000, 'text-classification' FROM models WHERE name = 'nq'`)
	exec(`INSERT INTO deployments (model_id, version, replicas, memory_bytes, memory_reservation_bytes) SELECT id, 1, 2, 268435456, 134217728 FROM models WHERE name = 'nq'`)
	seen := &deployment.Observed{Running: 2, Desired: 2, Tasks: []deployment.TaskState{{Slot: 1, Node: "w1", State: "running"}, {Slot: 2, Node: "w1", State: "running"}}}
	var gen int64
	if err := db.Pool.QueryRow(ctx, `SELECT generation FROM deployments`).Scan(&gen); err != nil {
		t.Fatal(err)
	}
	if err := deployment.WriteStatus(ctx, db.Pool, "nq", gen, deployment.StatusRunning, "2 of 2 replicas running", seen); err != nil {
		t.Fatal(err)
	}
	// a scale to 3 the swarm cannot apply
	if _, err := deployment.ManualScale(ctx, db.Pool, "nq", 3); err != nil {
		t.Fatal(err)
	}
	rec := &Reconciler{DB: db.Pool, Docker: noQuorum{}, Log: slog.New(slog.DiscardHandler)}
	if _, err := rec.Pass(ctx); !errors.Is(err, errNoLeader) {
		t.Fatalf("pass: %v, want Swarm's error", err)
	}
	var status, msg string
	var raw []byte
	var observedGen, newGen int64
	if err := db.Pool.QueryRow(ctx, `SELECT status, status_message, observed, observed_generation, generation FROM deployments`).Scan(&status, &msg, &raw, &observedGen, &newGen); err != nil {
		t.Fatal(err)
	}
	var obs deployment.Observed
	if err := json.Unmarshal(raw, &obs); err != nil {
		t.Fatal(err)
	}
	if status != deployment.StatusUnknown || !strings.Contains(msg, "does not have a leader") || !strings.Contains(msg, "desired state kept") {
		t.Errorf("status %q %q, want unknown with Swarm's answer", status, msg)
	}
	if obs.Running != 2 || len(obs.Tasks) != 2 {
		t.Errorf("observed replicas lost: %+v", obs)
	}
	if observedGen != gen || newGen <= gen {
		t.Errorf("observed generation %d (scale's %d, before %d): the pass claims to have acted", observedGen, newGen, gen)
	}
}
