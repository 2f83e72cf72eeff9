package scheduler

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/loadreport"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
)

// The autoscaler against the real Postgres and Redis (no Docker: the
// reconciler's part is TestReconcileAgainstSwarm): gateway figures in, the
// rule's counts out through deployment.Scale; 20 wake-ups for a model at zero
// make one change; a manual scale's floor holds; no figures, no change.
func TestAutoscalerTicksAndWakes(t *testing.T) {
	db := pgtest.New(t, true)
	rdb, prefix := rdbtest.New(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO models (name, task) VALUES ('sentiment', 'text-classification')`,
		`INSERT INTO deployments (model_id, version, replicas, autoscale_min, autoscale_max, autoscale_target_inflight,
			autoscale_scale_down_delay_ms, autoscale_idle_to_zero_ms, scaled_at)
			SELECT id, 1, 1, 0, 4, 4, 1500, 2500, now() - interval '1 hour' FROM models`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (replicas int, gen int64, reason string) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT replicas, generation, scale_reason FROM deployments`).Scan(&replicas, &gen, &reason); err != nil {
			t.Fatal(err)
		}
		return
	}
	publish := func(inflight float64, requests int64) {
		t.Helper()
		f := loadreport.Figures{Inflight: inflight, Requests: requests, Period: 0.2}
		if requests > 0 {
			f.LastRequest = time.Now().UnixMilli()
		}
		if err := loadreport.Publish(ctx, rdb, prefix, "gw-1", map[string]loadreport.Figures{"sentiment": f}, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	a := &Autoscaler{DB: db.Pool, Redis: rdb, Prefix: prefix, Interval: 200 * time.Millisecond, Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(nil)}
	tick := func() []ScaleEvent {
		t.Helper()
		ev, err := a.Tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}

	// 13 in flight on 1 replica: up to ceil(13/4) = 4 at once
	publish(13, 20)
	if ev := tick(); len(ev) != 1 || ev[0].From != 1 || ev[0].To != 4 {
		t.Fatalf("scale up: %+v", ev)
	}
	if r, gen, reason := state(); r != 4 || gen != 2 || !strings.HasPrefix(reason, "autoscaler: scale up") {
		t.Fatalf("after scale up: %d gen %d %q", r, gen, reason)
	}
	// load drops: nothing for the scale-down delay, then down to the floor 1
	// (a request was seen recently), then zero once idle_to_zero has passed
	start := time.Now()
	var timeline []string
	for time.Since(start) < 6*time.Second {
		publish(0, 0)
		for _, ev := range tick() {
			timeline = append(timeline, ev.Reason)
			took := time.Since(start)
			switch {
			case ev.To == 1 && took < 1400*time.Millisecond:
				t.Fatalf("scaled down after %s, before the 1.5 s delay", took)
			case ev.To == 0 && took < 2300*time.Millisecond:
				t.Fatalf("scaled to zero after %s, before idle_to_zero", took)
			}
			t.Logf("%5.1fs %d → %d: %s", took.Seconds(), ev.From, ev.To, ev.Reason)
		}
		if r, _, _ := state(); r == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r, _, _ := state(); r != 0 || len(timeline) != 2 {
		t.Fatalf("want 4 → 1 → 0, got %d replicas after %v", r, timeline)
	}

	// 20 wake-ups at once for the model at zero: one change
	_, gen0, _ := state()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var events []*ScaleEvent
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev, err := a.Wake(ctx, loadreport.Wakeup{Model: "sentiment", Held: 1})
			if err != nil {
				t.Error(err)
			}
			if ev != nil {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if r, gen, _ := state(); len(events) != 1 || r != 1 || gen != gen0+1 {
		t.Fatalf("20 wake-ups: %d events, replicas %d, generation +%d", len(events), r, gen-gen0)
	}
	// a wake-up through Redis, as a gateway sends it, when at zero again
	if _, err := db.Pool.Exec(ctx, `UPDATE deployments SET replicas = 0`); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Run(rctx); close(done) }()
	sent := time.Now()
	if err := loadreport.Wake(ctx, rdb, prefix, loadreport.Wakeup{Model: "sentiment", Held: 1}); err != nil {
		t.Fatal(err)
	}
	for r, _, _ := state(); r != 1; r, _, _ = state() {
		if time.Since(sent) > 3*time.Second {
			t.Fatal("a wake-up in Redis did not scale the model from zero")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("wake-up in Redis → replicas 1 in %s", time.Since(sent).Round(time.Millisecond))
	cancel()
	<-done

	// a wake-up that carries a burst (30 held, target 4, max 4) scales
	// straight to what the burst needs: one scale-up, not 0 → 1 → 4
	if _, err := db.Pool.Exec(ctx, `UPDATE deployments SET replicas = 0`); err != nil {
		t.Fatal(err)
	}
	if ev, err := a.Wake(ctx, loadreport.Wakeup{Model: "sentiment", Held: 30}); err != nil || ev == nil || ev.To != 4 {
		t.Fatalf("wake-up for 30 held requests: %+v %v, want 0 → 4", ev, err)
	}
	if ev, err := a.Wake(ctx, loadreport.Wakeup{Model: "sentiment", Held: 30}); err != nil || ev != nil {
		t.Fatalf("a second wake-up changed the count: %+v %v", ev, err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE deployments SET replicas = 1`); err != nil {
		t.Fatal(err)
	}

	// a manual scale sets the floor: idle load keeps 2
	if err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { _, err := deployment.ManualScale(ctx, tx, "sentiment", 2); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE deployments SET scaled_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	publish(0, 0)
	if ev := tick(); len(ev) != 0 {
		t.Fatalf("went below the manual floor: %+v", ev)
	}
	if r, _, _ := state(); r != 2 {
		t.Fatalf("replicas %d after a manual scale to 2", r)
	}

	// Redis unreachable: no figures, no change
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer dead.Close()
	blind := &Autoscaler{DB: db.Pool, Redis: dead, Prefix: prefix, Log: slog.New(slog.DiscardHandler)}
	if ev, err := blind.Tick(ctx); err == nil || len(ev) != 0 {
		t.Fatalf("without Redis: %+v %v", ev, err)
	}
}

// A wake-up for a canary at zero (the gateway names it by its deployment
// key, MODEL_canary) scales the canary, not the model's stable track.
func TestAutoscalerWakesCanary(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO models (name, task) VALUES ('sentiment', 'text-classification')`,
		`INSERT INTO deployments (model_id, version, replicas, autoscale_min, autoscale_max, autoscale_target_inflight,
			autoscale_scale_down_delay_ms, autoscale_idle_to_zero_ms, scaled_at)
			SELECT id, 1, 0, 0, 4, 4, 1500, 2500, now() - interval '1 hour' FROM models`,
		`INSERT INTO deployments (model_id, track, mode, weight, rollout_state, version, replicas, autoscale_min, autoscale_max,
			autoscale_target_inflight, autoscale_scale_down_delay_ms, autoscale_idle_to_zero_ms, scaled_at)
			SELECT id, 'canary', 'canary', 10, 'active', 2, 0, 0, 2, 4, 1500, 2500, now() - interval '1 hour' FROM models`,
	} {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	a := &Autoscaler{DB: db.Pool, Interval: 200 * time.Millisecond, Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(nil)}
	ev, err := a.Wake(ctx, loadreport.Wakeup{Model: deployment.Key("sentiment", deployment.TrackCanary), Held: 1})
	if err != nil || ev == nil || ev.To != 1 {
		t.Fatalf("canary wake-up: %+v %v, want 0 → 1", ev, err)
	}
	var stable, canary int
	if err := db.Pool.QueryRow(ctx, `SELECT (SELECT replicas FROM deployments WHERE track = 'stable'), (SELECT replicas FROM deployments WHERE track = 'canary')`).Scan(&stable, &canary); err != nil {
		t.Fatal(err)
	}
	if stable != 0 || canary != 1 {
		t.Fatalf("after the canary's wake-up: stable %d, canary %d replicas; want 0, 1", stable, canary)
	}
	if ev, err := a.Wake(ctx, loadreport.Wakeup{Model: "sentiment_canary_x", Held: 1}); err != nil || ev != nil {
		t.Fatalf("a wake-up for no deployment: %+v %v", ev, err)
	}
}
