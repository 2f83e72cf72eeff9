package deployment_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

type fixture struct {
	t      *testing.T
	ctx    context.Context
	db     *pgtest.DB
	listen *pgx.Conn
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, ctx: context.Background(), db: pgtest.New(t, true)}
	c, err := f.db.Pool.Acquire(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Release)
	f.listen = c.Conn()
	if err := deployment.Listen(f.ctx, f.listen); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) exec(q string, args ...any) {
	f.t.Helper()
	if _, err := f.db.Pool.Exec(f.ctx, q, args...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) tx(fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(f.ctx, f.db.Pool, fn)
}

func (f *fixture) notified(want string) {
	f.t.Helper()
	wctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
	defer cancel()
	n, err := f.listen.WaitForNotification(wctx)
	if err != nil || n.Payload != want {
		f.t.Fatalf("notification: %v %v, want %s", n, err, want)
	}
}

func (f *fixture) get(model string) deployment.Record {
	f.t.Helper()
	r, err := deployment.Get(f.ctx, f.db.Pool, model)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) modelID(name string) int64 {
	f.t.Helper()
	var id int64
	if err := f.db.Pool.QueryRow(f.ctx, `INSERT INTO models (name, task) VALUES ($1, 'text-classification') RETURNING id`, name).Scan(&id); err != nil {
		f.t.Fatal(err)
	}
	f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) VALUES ($1, 1, 'sha256:aa', 10, 'text-classification')`, id)
	return id
}

func TestScaleAndManualScale(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	plain, auto := f.modelID("plain"), f.modelID("auto")
	for _, s := range []deployment.Spec{
		{ModelID: plain, Model: "plain", Version: 1, Replicas: 1},
		{ModelID: auto, Model: "auto", Version: 1, Replicas: 2, Autoscale: deployment.Autoscale{Min: 0, Max: 4, TargetInflight: 4}},
	} {
		if err := f.tx(func(tx pgx.Tx) error { _, err := deployment.Put(ctx, tx, s); return err }); err != nil {
			t.Fatal(err)
		}
		f.notified(s.Model)
	}

	// the autoscaler's guarded write: applies once, then the guard refuses
	one, two := 1, 2
	for i, want := range []bool{true, false} {
		if err := f.tx(func(tx pgx.Tx) error {
			ok, err := deployment.Scale(ctx, tx, "auto", deployment.Change{Replicas: 3, Reason: "scale up: test", IfReplicas: &two})
			if ok != want {
				t.Fatalf("attempt %d: changed %v, want %v", i, ok, want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	f.notified("auto")
	if r := f.get("auto"); r.Replicas != 3 || r.Generation != 2 || r.ScaleReason != "scale up: test" || r.Stale() != true {
		t.Fatalf("after guarded scale: %+v", r)
	}
	if ok, err := deployment.Scale(ctx, f.db.Pool, "nope", deployment.Change{Replicas: 1, IfReplicas: &one}); ok || err != nil {
		t.Fatalf("guarded scale of a missing deployment: %v %v", ok, err)
	}
	if _, err := deployment.Scale(ctx, f.db.Pool, "nope", deployment.Change{Replicas: 1}); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("scale of a missing deployment: %v", err)
	}
	if _, err := deployment.Scale(ctx, f.db.Pool, "plain", deployment.Change{Replicas: -1}); !errors.Is(err, deployment.ErrInvalid) {
		t.Fatalf("scale to -1: %v", err)
	}

	// manual scale of a plain deployment sets the count
	if err := f.tx(func(tx pgx.Tx) error {
		n, err := deployment.ManualScale(ctx, tx, "plain", 5)
		if n != 5 {
			t.Fatalf("manual scale wrote %d", n)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.notified("plain")
	if r := f.get("plain"); r.Replicas != 5 || r.Autoscale.Enabled() || r.ScaleReason != "manual scale" {
		t.Fatalf("plain after manual scale: %+v", r)
	}
	// manual scale of an autoscaled deployment sets the floor
	if _, err := deployment.ManualScale(ctx, f.db.Pool, "auto", 1); err != nil {
		t.Fatal(err)
	}
	if r := f.get("auto"); r.Replicas != 3 || r.Autoscale.Min != 1 || r.Autoscale.Max != 4 {
		t.Fatalf("auto after scale 1: %+v (want floor 1, count kept at 3)", r)
	}
	if _, err := deployment.ManualScale(ctx, f.db.Pool, "auto", 6); err != nil {
		t.Fatal(err)
	}
	if r := f.get("auto"); r.Replicas != 6 || r.Autoscale.Min != 6 || r.Autoscale.Max != 6 {
		t.Fatalf("auto after scale 6: %+v (want floor and max 6, count 6)", r)
	}
	if _, err := deployment.ManualScale(ctx, f.db.Pool, "nope", 1); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("manual scale of a missing deployment: %v", err)
	}
}

// Deploy, scale and the autoscaler share one replica-count write: a
// redeploy with the same count keeps when and why it last changed; a
// different count records "deploy"; an autoscaled redeploy naming no count
// keeps the current one, clamped into the new bounds.
func TestPutSharesTheScaleLogic(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	id := f.modelID("m")
	put := func(s deployment.Spec) int {
		t.Helper()
		s.ModelID, s.Model, s.Version = id, "m", 1
		var n int
		if err := f.tx(func(tx pgx.Tx) error { var err error; n, err = deployment.Put(ctx, tx, s); return err }); err != nil {
			t.Fatal(err)
		}
		f.notified("m")
		return n
	}
	put(deployment.Spec{Replicas: 2, Resources: deployment.Resources{Labels: map[string]string{"zone": "eu"}, GPUs: 1, GPUMemory: 1 << 30}})
	r := f.get("m")
	if r.Replicas != 2 || r.ScaleReason != "deploy" || r.Labels["zone"] != "eu" || r.GPUMemory != 1<<30 || r.Status != deployment.StatusPending || r.Generation != 1 {
		t.Fatalf("first deploy: %+v", r)
	}
	if _, err := deployment.Scale(ctx, f.db.Pool, "m", deployment.Change{Replicas: 3, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	f.notified("m")
	scaled := f.get("m").ScaledAt
	put(deployment.Spec{Replicas: 3, Resources: deployment.Resources{CPUs: 2}})
	if r := f.get("m"); r.ScaledAt != scaled || r.ScaleReason != "test" || r.CPUs != 2 || r.Generation != 3 {
		t.Fatalf("redeploy with the same count: %+v (scaled_at %v)", r, scaled)
	}
	put(deployment.Spec{Replicas: 1})
	if r := f.get("m"); r.ScaleReason != "deploy" || !r.ScaledAt.After(scaled) {
		t.Fatalf("redeploy with another count: %+v", r)
	}
	as := deployment.Autoscale{Min: 2, Max: 4, TargetInflight: 4, ScaleDownDelay: 30 * time.Second, IdleToZero: time.Minute}
	if n := put(deployment.Spec{Replicas: 9, KeepReplicas: true, Autoscale: as}); n != 2 {
		t.Fatalf("autoscaled redeploy kept 1 clamped into [2,4]: wrote %d", n)
	}
	if r := f.get("m"); r.Autoscale != as {
		t.Fatalf("autoscale read back %+v, want %+v", r.Autoscale, as)
	}
}

func TestStatusRoutesGPUsAndDelete(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	for _, m := range []string{"a", "b"} {
		id := f.modelID(m)
		if _, err := deployment.Put(ctx, f.db.Pool, deployment.Spec{ModelID: id, Model: m, Version: 1, Replicas: 1, Resources: deployment.Resources{GPUs: 1, GPUMemory: 100}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := deployment.Scale(ctx, f.db.Pool, "b", deployment.Change{Replicas: 0}); err != nil {
		t.Fatal(err)
	}
	routes, err := deployment.Routable(ctx, f.db.Pool)
	if err != nil || len(routes) != 1 || routes[0].Model != "a" || routes[0].Task != "text-classification" || routes[0].Replicas != 1 {
		t.Fatalf("routable: %+v %v (b is at zero and not autoscaled)", routes, err)
	}
	ds, err := deployment.LoadDesired(ctx, f.db.Pool)
	if err != nil || len(ds) != 2 || ds[0].Digest != "sha256:aa" || ds[1].Replicas != 0 {
		t.Fatalf("desired: %+v %v", ds, err)
	}

	// a status of an older generation than the row's is dropped
	obs := &deployment.Observed{Running: 1, Desired: 1, Tasks: []deployment.TaskState{{Slot: 1, Node: "n1", State: "running"}}}
	if err := deployment.WriteStatus(ctx, f.db.Pool, "a", 1, deployment.StatusRunning, "1 of 1", obs); err != nil {
		t.Fatal(err)
	}
	if err := deployment.WriteStatus(ctx, f.db.Pool, "b", 1, deployment.StatusRunning, "stale", nil); err != nil {
		t.Fatal(err)
	}
	if r := f.get("a"); r.Status != deployment.StatusRunning || r.Observed.Running != 1 || r.Observed.Tasks[0].Node != "n1" || r.Stale() {
		t.Fatalf("status of a: %+v", r)
	}
	if r := f.get("b"); r.Status != deployment.StatusPending || !r.Stale() {
		t.Fatalf("stale status written to b: %+v", r)
	}
	if c, err := deployment.Converging(ctx, f.db.Pool); err != nil || !c {
		t.Fatalf("converging: %v %v", c, err)
	}

	if err := deployment.AssignGPUs(ctx, f.db.Pool, "a", []deployment.GPUAssignment{{Node: "n1", GPU: "GPU-1", Memory: 100}}); err != nil {
		t.Fatal(err)
	}
	if err := deployment.AssignGPUs(ctx, f.db.Pool, "nope", []deployment.GPUAssignment{{Node: "n1", GPU: "GPU-1", Memory: 1}}); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("assign to a missing deployment: %v", err)
	}
	got, err := deployment.Assignments(ctx, f.db.Pool)
	if err != nil || len(got) != 1 || got[0] != (deployment.GPUAssignment{Model: "a", Node: "n1", GPU: "GPU-1", Memory: 100}) {
		t.Fatalf("assignments: %+v %v", got, err)
	}
	if err := deployment.FreeGPUs(ctx, f.db.Pool, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := deployment.Assignments(ctx, f.db.Pool); len(got) != 0 {
		t.Fatalf("after free: %+v", got)
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := range deployment.KeepStarts + 3 {
		s := deployment.ReplicaStart{TaskID: "t" + string(rune('A'+i)), Slot: 1, Node: "n1", ScheduledAt: now.Add(time.Duration(i) * time.Second)}
		if err := deployment.RecordStart(ctx, f.db.Pool, "a", s); err != nil {
			t.Fatal(err)
		}
	}
	a := f.get("a")
	starts, err := deployment.ColdStarts(ctx, f.db.Pool, a.ID, 100)
	if err != nil || len(starts) != deployment.KeepStarts || !starts[0].ScheduledAt.Equal(now.Add(time.Duration(deployment.KeepStarts+2)*time.Second)) {
		t.Fatalf("cold starts: %d %v", len(starts), err)
	}

	if err := deployment.Delete(ctx, f.db.Pool, "a"); err != nil {
		t.Fatal(err)
	}
	if err := deployment.Delete(ctx, f.db.Pool, "a"); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := deployment.Get(ctx, f.db.Pool, "a"); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// Issue 14: a deployment asks for an inference engine or leaves it to the
// platform; the record keeps what was asked, LoadDesired hands it to the
// reconciler, and the reconciler's resolution (observed) is the effective one.
func TestBackend(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	id := f.modelID("b")
	put := func(backend string) error {
		_, err := deployment.Put(ctx, f.db.Pool, deployment.Spec{ModelID: id, Model: "b", Version: 1, Replicas: 1, Backend: backend})
		return err
	}
	if err := put(""); err != nil {
		t.Fatal(err)
	}
	if r := f.get("b"); r.Backend != "" || r.EffectiveBackend() != "" {
		t.Fatalf("default: backend %q effective %q", r.Backend, r.EffectiveBackend())
	}
	if err := put("ort"); err != nil {
		t.Fatal(err)
	}
	r := f.get("b")
	if r.Backend != "ort" || r.EffectiveBackend() != "ort" {
		t.Fatalf("ort: backend %q effective %q", r.Backend, r.EffectiveBackend())
	}
	ds, err := deployment.LoadDesired(ctx, f.db.Pool)
	if err != nil || len(ds) != 1 || ds[0].Backend != "ort" {
		t.Fatalf("LoadDesired: %+v %v", ds, err)
	}
	for _, bad := range []string{"ORT", "auto", "tensorrt", " go"} {
		if err := put(bad); !errors.Is(err, deployment.ErrInvalid) {
			t.Fatalf("backend %q: %v, want ErrInvalid", bad, err)
		}
	}
	if r := f.get("b"); r.Backend != "ort" || r.Generation != 2 {
		t.Fatalf("a refused backend changed the record: %+v", r)
	}
	// the database refuses what the API would (a second line of defence)
	if _, err := f.db.Pool.Exec(ctx, `UPDATE deployments SET backend = 'cuda'`); err == nil {
		t.Fatal("the backend column took an unknown engine")
	}
	// back to the default: the reconciler's resolution is the effective one
	if err := put(""); err != nil {
		t.Fatal(err)
	}
	r = f.get("b")
	if err := deployment.WriteStatus(ctx, f.db.Pool, "b", r.Generation, deployment.StatusRunning, "", &deployment.Observed{Backend: "go"}); err != nil {
		t.Fatal(err)
	}
	if r := f.get("b"); r.Backend != "" || r.EffectiveBackend() != "go" {
		t.Fatalf("resolved default: backend %q effective %q", r.Backend, r.EffectiveBackend())
	}
}

// Issue 15: a deployment records its version's format, GGUF when the
// version's metadata has a GGUF header (an embedding GGUF of task
// feature-extraction as much as a text-generation model), so that the
// reconciler (LoadDesired) and the gateway (Routable) run and route it on
// the generation runtime; a redeploy of another version follows it.
func TestFormat(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	var id int64
	if err := f.db.Pool.QueryRow(ctx, `INSERT INTO models (name, task) VALUES ('emb', 'feature-extraction') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) VALUES ($1, 1, 'sha256:aa', 10, 'feature-extraction')`, id)
	f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task, metadata)
		VALUES ($1, 2, 'sha256:bb', 10, 'feature-extraction', '{"gguf":{"architecture":"bert"},"memory_estimate_bytes":123}')`, id)
	for _, tt := range []struct {
		version int
		want    string
	}{{2, deployment.FormatGGUF}, {1, deployment.FormatONNX}, {2, deployment.FormatGGUF}} {
		if _, err := deployment.Put(ctx, f.db.Pool, deployment.Spec{ModelID: id, Model: "emb", Version: tt.version, Replicas: 1}); err != nil {
			t.Fatal(err)
		}
		ds, err := deployment.LoadDesired(ctx, f.db.Pool)
		if err != nil || len(ds) != 1 || ds[0].Format != tt.want || ds[0].Version != tt.version {
			t.Fatalf("version %d: LoadDesired %+v %v, want format %s", tt.version, ds, err, tt.want)
		}
		rs, err := deployment.Routable(ctx, f.db.Pool)
		if err != nil || len(rs) != 1 || rs[0].Format != tt.want {
			t.Fatalf("version %d: Routable %+v %v, want format %s", tt.version, rs, err, tt.want)
		}
	}
	if _, err := f.db.Pool.Exec(ctx, `UPDATE deployments SET format = 'safetensors'`); err == nil {
		t.Fatal("the format column took an unknown format")
	}
}
