package scheduler

import (
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

func TestLeaderElection(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	first, err := AcquireLeadership(ctx, db.Pool, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Leader, 1)
	go func() {
		l, err := AcquireLeadership(ctx, db.Pool, 50*time.Millisecond)
		if err == nil {
			got <- l
		}
	}()
	select {
	case <-got:
		t.Fatal("two schedulers lead at once")
	case <-time.After(400 * time.Millisecond):
	}
	first.Release()
	select {
	case second := <-got:
		second.Release()
	case <-time.After(3 * time.Second):
		t.Fatal("the second scheduler never took over")
	}
}

// Against the real engine: the reconciler creates nlp-<model> from a
// deployment row, the spec reads back as built, a second pass changes
// nothing, scaling 1→3→1 converges, and undeploy removes the service. The
// replicas run the image's netcheck server in place of the runtime.
func TestReconcileAgainstSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test in -short mode")
	}
	cl := dockertest.Swarm(t)
	image := dockertest.Image(t)
	db := pgtest.New(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	info, err := cl.Info(ctx, client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("docker", "node", "update", "--label-add", "type=machine-learning", info.Info.Swarm.NodeID).CombinedOutput(); err != nil {
		t.Fatalf("label node: %v %s", err, out)
	}
	netName := dockertest.Name("nlpswarm-rt-net")
	nw, err := cl.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "overlay", Attachable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.NetworkRemove(context.Background(), nw.ID, client.NetworkRemoveOptions{}) })

	// removed last (cleanups run in reverse): after the service and its containers
	volume := dockertest.Name("nlpswarm-rt-artifacts")
	t.Cleanup(func() { dockertest.RemoveVolume(t, cl, volume) })
	model := strings.TrimPrefix(dockertest.Name("rt"), "")
	svcName := ServiceName(model)
	t.Cleanup(func() { cl.ServiceRemove(context.Background(), svcName, client.ServiceRemoveOptions{}) })
	exec1 := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec1(`INSERT INTO models (name, task) VALUES ($1, 'text-classification')`, model)
	exec1(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:`+strings.Repeat("a", 64)+`', 1000, 'text-classification' FROM models WHERE name = $1`, model)
	exec1(`INSERT INTO deployments (model_id, version, replicas, memory_bytes, memory_reservation_bytes) SELECT id, 1, 1, 268435456, 134217728 FROM models WHERE name = $1`, model)

	rec := &Reconciler{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler), Spec: SpecConfig{
		Owner: dockertest.Name("test"), // a stack on the same swarm keeps its services
		Image: image, Network: nw.ID, PlacementConstraint: "node.labels.type==machine-learning",
		ArtifactVolume: volume, Args: []string{"netcheck", "--listen=:8080"},
	}}
	res, err := rec.Pass(ctx)
	if err != nil || res.Created != 1 {
		t.Fatalf("first pass: %+v %v", res, err)
	}
	insp, err := cl.ServiceInspect(ctx, svcName, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := insp.Service.Spec
	if spec.EndpointSpec.Mode != swarm.ResolutionModeDNSRR {
		t.Errorf("endpoint mode %s", spec.EndpointSpec.Mode)
	}
	if c := spec.TaskTemplate.Placement.Constraints; len(c) != 1 || c[0] != "node.labels.type==machine-learning" {
		t.Errorf("constraints %v", c)
	}
	if r := spec.TaskTemplate.Resources; r.Limits.MemoryBytes != 268435456 || r.Reservations.MemoryBytes != modelmgr.MinMemory {
		t.Errorf("memory limit %d reservation %d", r.Limits.MemoryBytes, r.Reservations.MemoryBytes)
	}
	if spec.Labels[LabelManaged] != "true" || spec.Labels[LabelModel] != model || spec.Labels[LabelVersion] != "1" {
		t.Errorf("labels %v", spec.Labels)
	}
	if _, ok := spec.Labels["com.docker.stack.namespace"]; ok {
		t.Error("stack namespace label on a model service")
	}
	if res, err := rec.Pass(ctx); err != nil || res.Unchanged != 1 || res.Created+res.Updated+res.Removed != 0 {
		t.Fatalf("second pass should change nothing: %+v %v", res, err)
	}
	waitRunning := func(n int) {
		t.Helper()
		start := time.Now()
		for {
			if _, err := rec.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			var status string
			var raw []byte
			db.Pool.QueryRow(ctx, `SELECT d.status, d.observed FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`, model).Scan(&status, &raw)
			var obs Observed
			json.Unmarshal(raw, &obs)
			if status == "running" && obs.Running == n {
				t.Logf("%d replica(s) running after %s (tasks %+v)", n, time.Since(start).Round(100*time.Millisecond), obs.Tasks)
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("never %d running: status %s observed %s", n, status, raw)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitRunning(1)
	for _, n := range []int{3, 1} {
		exec1(`UPDATE deployments d SET replicas = $2, generation = generation + 1 FROM models m WHERE m.id = d.model_id AND m.name = $1`, model, n)
		waitRunning(n)
	}
	exec1(`DELETE FROM deployments`)
	if res, err := rec.Pass(ctx); err != nil || res.Removed != 1 {
		t.Fatalf("undeploy pass: %+v %v", res, err)
	}
	if _, err := cl.ServiceInspect(ctx, svcName, client.ServiceInspectOptions{}); err == nil {
		t.Fatal("service still there after undeploy")
	}
}
