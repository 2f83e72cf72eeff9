package scheduler

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// Against the real engine: a canary is a Swarm service of its own
// (nlp-MODEL_canary: Swarm takes the underscore), running beside the
// stable one; a promote rolls the stable service to the canary's version,
// the watcher retires the canary once that roll is done, and the
// reconciler removes the canary's service after the drain. The replicas
// run the image's netcheck server in place of the runtime.
func TestCanaryAgainstSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newSwarmFixture(ctx, t, "cy")
	cl, db, model := f.cl, f.db, f.model
	canarySvc := deployment.ServiceName(model, deployment.TrackCanary)
	t.Cleanup(func() { cl.ServiceRemove(context.Background(), canarySvc, client.ServiceRemoveOptions{}) })
	var id int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO models (name, task) VALUES ($1, 'text-classification') RETURNING id`, model).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for v, d := range []string{"a", "b"} {
		f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) VALUES ($1, $2, $3, 1000, 'text-classification')`,
			id, v+1, "sha256:"+strings.Repeat(d, 64))
	}
	tx := func(fn func(pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, db.Pool, fn); err != nil {
			t.Fatal(err)
		}
	}
	tx(func(q pgx.Tx) error {
		_, err := deployment.Put(ctx, q, deployment.Spec{ModelID: id, Model: model, Version: 1, Replicas: 2})
		return err
	})
	tx(func(q pgx.Tx) error {
		_, err := deployment.PutCanary(ctx, q, deployment.CanarySpec{Spec: deployment.Spec{ModelID: id, Model: model, Version: 2, Replicas: 1,
			Resources: deployment.Resources{MemoryBytes: 300 << 20}}, Mode: deployment.ModeCanary, Weight: 10})
		return err
	})
	rec := &Reconciler{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler), Spec: f.spec}
	if res, err := rec.Pass(ctx); err != nil || res.Created != 2 {
		t.Fatalf("first pass: %+v %v", res, err)
	}
	insp, err := cl.ServiceInspect(ctx, canarySvc, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatalf("canary service: %v", err)
	}
	if l := insp.Service.Spec.Labels; l[LabelTrack] != "canary" || l[LabelVersion] != "2" || l[LabelModel] != model ||
		insp.Service.Spec.TaskTemplate.Resources.Limits.MemoryBytes != 300<<20 {
		t.Fatalf("canary service spec: %v", l)
	}
	// both run, each observed on its own row
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				t.Fatalf("never %s", what)
			}
			if _, err := rec.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	running := func() bool {
		st, err1 := deployment.Get(ctx, db.Pool, model)
		c, err2 := deployment.GetCanary(ctx, db.Pool, model)
		return err1 == nil && err2 == nil && st.Status == "running" && st.Observed.Running == 2 && c.Status == "running" && c.Observed.Running == 1
	}
	waitFor("both running", running)

	// promote: the stable service rolls to version 2; the watcher retires
	// the canary when the roll is done
	tx(func(q pgx.Tx) error { _, err := deployment.Promote(ctx, q, model); return err })
	w := &CanaryWatcher{DB: db.Pool, Docker: cl, Log: slog.New(slog.DiscardHandler)}
	start := time.Now()
	waitFor("promoted", func() bool {
		if err := w.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		c, _ := deployment.GetCanary(ctx, db.Pool, model)
		return c.Canary.State == deployment.RolloutPromoted
	})
	st, _ := cl.ServiceInspect(ctx, f.svc, client.ServiceInspectOptions{})
	if st.Service.Spec.Labels[LabelVersion] != "2" || (st.Service.UpdateStatus != nil && st.Service.UpdateStatus.State == "updating") {
		t.Fatalf("promoted while the stable service is at version %s, update %+v", st.Service.Spec.Labels[LabelVersion], st.Service.UpdateStatus)
	}
	t.Logf("promote finished %s after it started (stable rolled start-first)", time.Since(start).Round(100*time.Millisecond))
	// the canary's service outlives the routing by the drain, then goes
	if _, err := cl.ServiceInspect(ctx, canarySvc, client.ServiceInspectOptions{}); err != nil {
		t.Fatalf("canary service gone before its drain: %v", err)
	}
	f.exec(`UPDATE deployments SET retired_at = now() - interval '1 minute' WHERE track = 'canary'`)
	if res, err := rec.Pass(ctx); err != nil || res.Removed != 1 {
		t.Fatalf("pass after the drain: %+v %v", res, err)
	}
	if _, err := cl.ServiceInspect(ctx, canarySvc, client.ServiceInspectOptions{}); err == nil {
		t.Fatal("canary service still there after its drain")
	}
}
