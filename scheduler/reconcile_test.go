package scheduler

import (
	"context"
	"encoding/json"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/dockertest"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newSwarmFixture(ctx, t, "rt")
	cl, db, model, svcName, exec1 := f.cl, f.db, f.model, f.svc, f.exec
	if out, err := exec.Command("docker", "node", "update", "--label-add", "type=machine-learning", f.node).CombinedOutput(); err != nil {
		t.Fatalf("label node: %v %s", err, out)
	}
	exec1(`INSERT INTO models (name, task) VALUES ($1, 'text-classification')`, model)
	exec1(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:`+strings.Repeat("a", 64)+`', 1000, 'text-classification' FROM models WHERE name = $1`, model)
	exec1(`INSERT INTO deployments (model_id, version, replicas, memory_bytes, memory_reservation_bytes) SELECT id, 1, 1, 268435456, 134217728 FROM models WHERE name = $1`, model)

	sc := f.spec
	sc.PlacementConstraint = "node.labels.type==machine-learning"
	rec := &Reconciler{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler), Spec: sc}
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
	if r := spec.TaskTemplate.Resources; r.Limits.MemoryBytes != 268435456 || r.Reservations.MemoryBytes != deployment.MinMemory {
		t.Errorf("memory limit %d reservation %d", r.Limits.MemoryBytes, r.Reservations.MemoryBytes)
	}
	if spec.Labels[LabelManaged] != "true" || spec.Labels[LabelModel] != model || spec.Labels[LabelVersion] != "1" || spec.Labels[LabelBackend] != "go" {
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
			var obs deployment.Observed
			json.Unmarshal(raw, &obs)
			if status == "running" && obs.Running == n {
				if obs.Backend != "go" {
					t.Fatalf("observed engine %q, want go (the default without an ORT image)", obs.Backend)
				}
				t.Logf("%d replica(s) running after %s (tasks %+v)", n, time.Since(start).Round(100*time.Millisecond), obs.Tasks)
				// the nodes page tells the replicas' GPU processes by these pids
				for _, ts := range obs.Tasks {
					if ts.State == "running" && ts.PID <= 0 {
						t.Fatalf("running task without its pid: %+v", ts)
					}
				}
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
	// issue 14: ort asked for with no ORT image is unplaceable, with the
	// reason, and the service is left as it runs
	before, _ := cl.ServiceInspect(ctx, svcName, client.ServiceInspectOptions{})
	exec1(`UPDATE deployments d SET backend = 'ort', generation = generation + 1 FROM models m WHERE m.id = d.model_id AND m.name = $1`, model)
	if res, err := rec.Pass(ctx); err != nil || res.Created+res.Updated+res.Removed+res.Unchanged != 0 {
		t.Fatalf("ort without an ORT image: %+v %v", res, err)
	}
	var status, msg string
	db.Pool.QueryRow(ctx, `SELECT status, status_message FROM deployments`).Scan(&status, &msg)
	after, err := cl.ServiceInspect(ctx, svcName, client.ServiceInspectOptions{})
	if status != deployment.StatusUnplaceable || !strings.Contains(msg, "no ONNX Runtime image") || err != nil ||
		after.Service.Version.Index != before.Service.Version.Index {
		t.Fatalf("ort without an ORT image: status %s %q; service touched or gone (%v)", status, msg, err)
	}
	exec1(`DELETE FROM deployments`)
	if res, err := rec.Pass(ctx); err != nil || res.Removed != 1 {
		t.Fatalf("undeploy pass: %+v %v", res, err)
	}
	if _, err := cl.ServiceInspect(ctx, svcName, client.ServiceInspectOptions{}); err == nil {
		t.Fatal("service still there after undeploy")
	}
}

// Each replica of a GPU deployment is a service of its own, pinned to its
// GPU (issue 16): two replicas on a node of two GPUs take one GPU each.
// Scaled to zero the deployment gives back its GPUs and its replica
// services go; scaled up again, it is placed anew. The GPUs are rows of
// ours, not devices (CI has none): only the placement and the service
// specs are checked, not the containers.
func TestReconcileGPUDeploymentToZeroAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newSwarmFixture(ctx, t, "gpu")
	cl, db, node, model, exec1 := f.cl, f.db, f.node, f.model, f.exec
	for slot := range 2 {
		t.Cleanup(func() {
			cl.ServiceRemove(context.Background(), GroupServiceName(model, slot), client.ServiceRemoveOptions{})
		})
	}
	exec1(`INSERT INTO nodes (id, hostname, availability, state) VALUES ($1, 'test-node', 'active', 'ready')`, node)
	exec1(`INSERT INTO gpus (node_id, uuid, idx, name, memory_total, memory_free) VALUES ($1, 'GPU-fake-test-0', 0, 'FAKE GPU (test row)', 85899345920, 85899345920),
		($1, 'GPU-fake-test-1', 1, 'FAKE GPU (test row)', 85899345920, 85899345920)`, node)
	exec1(`INSERT INTO models (name, task) VALUES ($1, 'text-classification')`, model)
	exec1(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:`+strings.Repeat("b", 64)+`', 1000, 'text-classification' FROM models WHERE name = $1`, model)
	exec1(`INSERT INTO deployments (model_id, version, replicas, memory_bytes, memory_reservation_bytes, gpus, gpu_memory_bytes)
		SELECT id, 1, 2, 268435456, 134217728, 1, 1073741824 FROM models WHERE name = $1`, model)
	rec := &Reconciler{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler), Spec: f.spec}
	// check passes and wants slot i's service pinned to gpus[i] (none: no service)
	check := func(step string, gpus ...string) {
		t.Helper()
		if _, err := rec.Pass(ctx); err != nil {
			t.Fatalf("%s: pass: %v", step, err)
		}
		for slot := range 2 {
			insp, err := cl.ServiceInspect(ctx, GroupServiceName(model, slot), client.ServiceInspectOptions{})
			if slot >= len(gpus) {
				if err == nil {
					t.Errorf("%s: slot %d still has its service", step, slot)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: slot %d: %v", step, slot, err)
			}
			spec := insp.Service.Spec
			if got := replicas(spec); got != 1 {
				t.Errorf("%s: slot %d has %d replicas, want 1", step, slot, got)
			}
			if !slices.Contains(spec.TaskTemplate.Placement.Constraints, "node.id=="+node) ||
				!slices.Contains(spec.TaskTemplate.ContainerSpec.Env, "NVIDIA_VISIBLE_DEVICES="+gpus[slot]) {
				t.Errorf("%s: slot %d not pinned to %s (constraints %v, env %v)", step, slot, gpus[slot],
					spec.TaskTemplate.Placement.Constraints, spec.TaskTemplate.ContainerSpec.Env)
			}
			if a := spec.TaskTemplate.Networks; len(a) != 1 || !slices.Contains(a[0].Aliases, ServiceName(model)) {
				t.Errorf("%s: slot %d lacks the alias %s the gateway resolves: %+v", step, slot, ServiceName(model), a)
			}
		}
		var status string
		var held int
		db.Pool.QueryRow(ctx, `SELECT d.status, (SELECT count(DISTINCT gpu_uuid) FROM gpu_assignments a WHERE a.deployment_id = d.id)
			FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`, model).Scan(&status, &held)
		if status == "unplaceable" || held != len(gpus) {
			t.Errorf("%s: status %q, %d GPU(s) assigned, want %d", step, status, held, len(gpus))
		}
	}
	check("placed", "GPU-fake-test-0", "GPU-fake-test-1")
	exec1(`UPDATE deployments SET replicas = 0, generation = generation + 1 WHERE model_id = (SELECT id FROM models WHERE name = $1)`, model)
	check("scaled to zero")
	exec1(`UPDATE deployments SET replicas = 1, generation = generation + 1 WHERE model_id = (SELECT id FROM models WHERE name = $1)`, model)
	check("scaled back up", "GPU-fake-test-0")
}

// swarmFixture is what a reconcile test against the real swarm needs: the
// engine, a migrated database, this node's swarm ID, a model name and its
// service's, and a SpecConfig with an overlay network and an artifact
// volume of its own. All of it is removed when the test ends.
type swarmFixture struct {
	cl         *client.Client
	db         *pgtest.DB
	node       string
	model, svc string
	spec       SpecConfig
	ctx        context.Context
	t          *testing.T
}

func newSwarmFixture(ctx context.Context, t *testing.T, prefix string) *swarmFixture {
	t.Helper()
	f := &swarmFixture{cl: dockertest.Swarm(t), ctx: ctx, t: t}
	image := dockertest.Image(t)
	f.db = pgtest.New(t, true)
	info, err := f.cl.Info(ctx, client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.node = info.Info.Swarm.NodeID
	nw, err := f.cl.NetworkCreate(ctx, dockertest.Name("nlpswarm-"+prefix+"-net"), client.NetworkCreateOptions{Driver: "overlay", Attachable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cl.NetworkRemove(context.Background(), nw.ID, client.NetworkRemoveOptions{}) })
	// removed last (cleanups run in reverse): after the service and its containers
	volume := dockertest.Name("nlpswarm-" + prefix + "-artifacts")
	t.Cleanup(func() { dockertest.RemoveVolume(t, f.cl, volume) })
	f.model = dockertest.Name(prefix)
	f.svc = ServiceName(f.model)
	t.Cleanup(func() { f.cl.ServiceRemove(context.Background(), f.svc, client.ServiceRemoveOptions{}) })
	f.spec = SpecConfig{
		Owner: dockertest.Name("test"), // a stack on the same swarm keeps its services
		Image: image, Network: nw.ID, ArtifactVolume: volume, Args: []string{"netcheck", "--listen=:8080"},
	}
	return f
}

// exec runs q on the test database.
func (f *swarmFixture) exec(q string, args ...any) {
	f.t.Helper()
	if _, err := f.db.Pool.Exec(f.ctx, q, args...); err != nil {
		f.t.Fatal(err)
	}
}
