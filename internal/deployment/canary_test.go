package deployment_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

func TestKeyAndServiceName(t *testing.T) {
	for _, c := range []struct{ model, track, key, service string }{
		{"sentiment", deployment.TrackStable, "sentiment", "nlp-sentiment"},
		{"sentiment", deployment.TrackCanary, "sentiment_canary", "nlp-sentiment_canary"},
		{"a-canary", deployment.TrackStable, "a-canary", "nlp-a-canary"},
	} {
		if k := deployment.Key(c.model, c.track); k != c.key {
			t.Errorf("Key(%s, %s) = %s, want %s", c.model, c.track, k, c.key)
		}
		if m, tr := deployment.SplitKey(c.key); m != c.model || tr != c.track {
			t.Errorf("SplitKey(%s) = %s %s", c.key, m, tr)
		}
		if s := deployment.ServiceName(c.model, c.track); s != c.service {
			t.Errorf("ServiceName = %s, want %s", s, c.service)
		}
	}
}

func TestRollbackRuleValidate(t *testing.T) {
	for _, c := range []struct {
		r  deployment.RollbackRule
		ok bool
	}{
		{deployment.RollbackRule{}, true},
		{deployment.RollbackRule{MaxErrorRate: 0.05, Window: 30 * time.Second}, true},
		{deployment.RollbackRule{MaxP99: time.Second, Window: time.Minute}, true},
		{deployment.RollbackRule{MaxErrorRate: 0.05}, false},  // no window
		{deployment.RollbackRule{Window: time.Minute}, false}, // no bound
		{deployment.RollbackRule{MaxErrorRate: 2, Window: time.Minute}, false},
		{deployment.RollbackRule{MaxP99: time.Second, Window: 48 * time.Hour}, false},
	} {
		if err := c.r.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.r, err)
		}
	}
	for _, c := range []struct {
		mode string
		w    float64
		ok   bool
	}{{"canary", 5, true}, {"canary", 0, false}, {"canary", 101, false}, {"shadow", 0, true}, {"shadow", 5, false}, {"blue", 5, false}} {
		if err := deployment.ValidateSplit(c.mode, c.w); (err == nil) != c.ok {
			t.Errorf("%s %g: %v", c.mode, c.w, err)
		}
	}
}

// TestCanaryRollout walks the record through a canary's life: refusals,
// the route the gateway sees, promote, its finish, and rollbacks (one
// during a promote, which gives the stable row its version back).
func TestCanaryRollout(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	id := f.modelID("senti")
	f.exec(`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) VALUES ($1, 2, 'sha256:bb', 10, 'text-classification')`, id)
	canary := func(s deployment.CanarySpec) error {
		return f.tx(func(tx pgx.Tx) error { _, err := deployment.PutCanary(ctx, tx, s); return err })
	}
	spec := deployment.CanarySpec{Spec: deployment.Spec{ModelID: id, Model: "senti", Version: 2, Replicas: 1,
		Resources: deployment.Resources{CPUs: 1, MemoryReservation: 300 << 20}}, Mode: deployment.ModeCanary, Weight: 10, Sticky: true,
		Rollback: deployment.RollbackRule{MaxErrorRate: 0.05, Window: 20 * time.Second}}
	if err := canary(spec); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("canary of a model not deployed: %v", err)
	}
	if err := f.tx(func(tx pgx.Tx) error {
		_, err := deployment.Put(ctx, tx, deployment.Spec{ModelID: id, Model: "senti", Version: 1, Replicas: 3})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	same := spec
	same.Version = 1
	if err := canary(same); !errors.Is(err, deployment.ErrInvalid) {
		t.Fatalf("canary of the stable version: %v", err)
	}
	if err := canary(spec); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	if err := canary(spec); !errors.Is(err, deployment.ErrConflict) {
		t.Fatalf("a second canary: %v", err)
	}
	desired, err := deployment.LoadDesired(ctx, f.db.Pool)
	if err != nil || len(desired) != 2 || desired[0].Key() != "senti" || desired[1].Key() != "senti_canary" || desired[1].Version != 2 {
		t.Fatalf("desired: %v %+v", err, desired)
	}
	// not routed until the scheduler has seen its service run this
	// generation; then routed, and the gateways told (NOTIFY)
	routes, err := deployment.Routable(ctx, f.db.Pool)
	if err != nil || len(routes) != 1 || routes[0].Canary != nil {
		t.Fatalf("routable before the canary runs: %v %+v", err, routes)
	}
	gen := desired[1].Generation
	if err := deployment.WriteStatus(ctx, f.db.Pool, "senti_canary", gen, deployment.StatusDeploying, "0 of 1 replicas running", nil); err != nil {
		t.Fatal(err)
	}
	if routes, _ = deployment.Routable(ctx, f.db.Pool); routes[0].Canary != nil {
		t.Fatalf("a deploying canary is routed: %+v", routes[0].Canary)
	}
	if err := deployment.WriteStatus(ctx, f.db.Pool, "senti_canary", gen, deployment.StatusRunning, "1 of 1 replicas running", nil); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	routes, err = deployment.Routable(ctx, f.db.Pool)
	if err != nil || len(routes) != 1 {
		t.Fatalf("routable: %v %+v", err, routes)
	}
	want := deployment.CanaryRoute{Version: 2, Mode: "canary", Weight: 10, Sticky: true, Replicas: 1, Format: "onnx"}
	if r := routes[0]; r.Version != 1 || r.Replicas != 3 || r.Canary == nil || *r.Canary != want {
		t.Fatalf("route: %+v %+v", r, r.Canary)
	}
	// routed from then on, a replica lost or not (the gateway falls back to
	// the stable version while none is available)
	if err := deployment.WriteStatus(ctx, f.db.Pool, "senti_canary", gen, deployment.StatusDeploying, "0 of 1 replicas running", nil); err != nil {
		t.Fatal(err)
	}
	if routes, _ = deployment.Routable(ctx, f.db.Pool); routes[0].Canary == nil {
		t.Fatal("a canary that ran is not routed once a replica is lost")
	}
	// the reconciler's status write reaches the canary's row alone
	if err := deployment.WriteStatus(ctx, f.db.Pool, "senti_canary", desired[1].Generation, "running", "1 of 1", nil); err != nil {
		t.Fatal(err)
	}
	c, err := deployment.GetCanary(ctx, f.db.Pool, "senti")
	if err != nil || c.Status != "running" || c.Canary == nil || c.Canary.State != deployment.RolloutActive || c.Canary.Rollback.Window != 20*time.Second {
		t.Fatalf("canary record: %v %+v %+v", err, c, c.Canary)
	}
	if s := f.get("senti"); s.Status == "running" || s.Canary != nil {
		t.Fatalf("stable touched by the canary's status: %+v", s)
	}

	// promote: stable takes version 2 and the canary's resources, keeps its count
	if err := f.tx(func(tx pgx.Tx) error { _, err := deployment.Promote(ctx, tx, "senti"); return err }); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	if s := f.get("senti"); s.Version != 2 || s.Replicas != 3 || s.CPUs != 1 {
		t.Fatalf("stable after promote: %+v", s)
	}
	if err := f.tx(func(tx pgx.Tx) error { _, err := deployment.Promote(ctx, tx, "senti"); return err }); !errors.Is(err, deployment.ErrConflict) {
		t.Fatalf("promote twice: %v", err)
	}
	// a rollback during the promote gives stable its version 1 back
	if err := f.tx(func(tx pgx.Tx) error {
		_, _, err := deployment.Rollback(ctx, tx, "senti", "rolled back by an operator", false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	if s := f.get("senti"); s.Version != 1 || s.CPUs != 0 || s.Replicas != 3 {
		t.Fatalf("stable after a rollback during the promote: %+v", s)
	}
	routes, _ = deployment.Routable(ctx, f.db.Pool)
	if routes[0].Canary != nil {
		t.Fatalf("a rolled-back canary is routed: %+v", routes[0].Canary)
	}
	c, _ = deployment.GetCanary(ctx, f.db.Pool, "senti")
	if c.Canary.State != deployment.RolloutRolledBack || c.Canary.Reason != "rolled back by an operator" || c.Canary.RetiredAt == nil {
		t.Fatalf("rolled back: %+v", c.Canary)
	}
	// its service is still wanted for the drain period
	if desired, _ = deployment.LoadDesired(ctx, f.db.Pool); len(desired) != 2 {
		t.Fatalf("desired during the drain: %+v", desired)
	}
	f.exec(`UPDATE deployments SET retired_at = now() - interval '1 minute' WHERE track = 'canary'`)
	if desired, _ = deployment.LoadDesired(ctx, f.db.Pool); len(desired) != 1 {
		t.Fatalf("desired after the drain: %+v", desired)
	}
	if _, _, err := deployment.Rollback(ctx, f.db.Pool, "senti", "again", false); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("rollback without a canary: %v", err)
	}

	// a new canary replaces the retired row; the automatic rule's rollback
	// leaves a promoting canary alone; the promote finishes
	if err := canary(spec); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	if err := f.tx(func(tx pgx.Tx) error { _, err := deployment.Promote(ctx, tx, "senti"); return err }); err != nil {
		t.Fatal(err)
	}
	f.notified("senti")
	if _, done, err := deployment.Rollback(ctx, f.db.Pool, "senti", "auto", true); done || err != nil {
		t.Fatalf("automatic rollback of a promoting canary: %v %v", done, err)
	}
	if ok, err := deployment.FinishPromote(ctx, f.db.Pool, "senti"); !ok || err != nil {
		t.Fatalf("finish promote: %v %v", ok, err)
	}
	f.notified("senti")
	c, _ = deployment.GetCanary(ctx, f.db.Pool, "senti")
	if s := f.get("senti"); s.Version != 2 || c.Canary.State != deployment.RolloutPromoted {
		t.Fatalf("after the promote: %+v %+v", s, c.Canary)
	}
	// undeploy removes both rows
	if err := deployment.Delete(ctx, f.db.Pool, "senti"); err != nil {
		t.Fatal(err)
	}
	if _, err := deployment.GetCanary(ctx, f.db.Pool, "senti"); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("canary after undeploy: %v", err)
	}
}
