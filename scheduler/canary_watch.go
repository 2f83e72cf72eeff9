package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
	"github.com/nlpswarm/nlpswarm/scheduler/canary"
)

// CanaryWatcher drives each model's canary rollout on the leading
// scheduler: every Interval it reads the routed canaries, their figures over
// their rule's window (internal/versionstats, which the gateways publish)
// and the stable service's progress, asks scheduler/canary what to do, and
// applies it through internal/deployment (FinishPromote, Rollback). The
// reconciler, woken by the NOTIFY, removes a retired canary's service once
// deployment.Drain has passed.
type CanaryWatcher struct {
	DB       *pgxpool.Pool
	Docker   Docker
	Redis    redis.Cmdable // nil: no figures, so no automatic rollback (promotes still finish)
	Prefix   string
	Interval time.Duration // 1 s when 0
	Log      *slog.Logger
	Metrics  *Metrics // optional
}

// Run ticks until ctx ends.
func (w *CanaryWatcher) Run(ctx context.Context) {
	every := w.Interval
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := w.Tick(ctx); err != nil && ctx.Err() == nil {
				w.Log.Warn("canary watcher", "err", err)
			}
		}
	}
}

// Tick decides on every routed canary once.
func (w *CanaryWatcher) Tick(ctx context.Context) error {
	cs, err := deployment.ListCanaries(ctx, w.DB, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if !c.Canary.Routed() {
			continue
		}
		r, err := w.snapshot(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		action, why := canary.Decide(r)
		if err := w.apply(ctx, c, action, why); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// snapshot reads what canary.Decide needs about c.
func (w *CanaryWatcher) snapshot(ctx context.Context, c deployment.Record) (canary.Rollout, error) {
	r := canary.Rollout{Model: c.Model, State: c.Canary.State, Mode: c.Canary.Mode, Version: c.Version, Rule: c.Canary.Rollback}
	if c.Canary.State == deployment.RolloutPromoting {
		st, err := deployment.Get(ctx, w.DB, c.Model)
		if err != nil {
			return r, err
		}
		r.StableVersion = st.Version
		r.StableRunning = st.Status == deployment.StatusRunning && !st.Stale()
		if r.StableRunning {
			rolling, err := w.rolling(ctx, c.Model)
			if err != nil {
				return r, err
			}
			r.StableRolling = rolling
		}
		return r, nil
	}
	if w.Redis == nil || !r.Rule.Enabled() {
		return r, nil
	}
	stats, err := versionstats.Read(ctx, w.Redis, w.Prefix, c.Model, r.Rule.Window)
	if err != nil {
		w.Log.Warn("canary watcher: no figures, no automatic rollback this tick", "model", c.Model, "err", err)
		return r, nil
	}
	if s, ok := stats[c.Version]; ok {
		r.Figures = &canary.Figures{Requests: s.Requests, Errors: s.Errors, P99: s.P99}
	}
	return r, nil
}

// rolling reports whether Swarm is still rolling any of model's stable
// services (one, or a GPU deployment's one per replica).
func (w *CanaryWatcher) rolling(ctx context.Context, model string) (bool, error) {
	list, err := w.Docker.ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", LabelModel+"="+model)})
	if err != nil {
		return false, fmt.Errorf("list services of %s: %w", model, err)
	}
	now := time.Now()
	for _, s := range list.Items {
		if svc := serviceOf(s, now); svc.Model == model && svc.Updating {
			return true, nil
		}
	}
	return false, nil
}

func (w *CanaryWatcher) apply(ctx context.Context, c deployment.Record, action canary.Action, why string) error {
	switch action {
	case canary.FinishPromote:
		ok, err := deployment.FinishPromote(ctx, w.DB, c.Model)
		if ok {
			w.Log.Info("canary promoted", "model", c.Model, "version", c.Version)
		}
		return err
	case canary.Rollback:
		var done bool
		err := pgx.BeginFunc(ctx, w.DB, func(tx pgx.Tx) error {
			var err error
			_, done, err = deployment.Rollback(ctx, tx, c.Model, why, true)
			return err
		})
		if err != nil {
			return err
		}
		if done {
			w.Log.Warn("canary rolled back", "model", c.Model, "version", c.Version, "why", why)
			if w.Metrics != nil {
				w.Metrics.canaryRollbacks.WithLabelValues(c.Model).Inc()
			}
		}
	}
	return nil
}
