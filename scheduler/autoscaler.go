package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/loadreport"
	"github.com/nlpswarm/nlpswarm/scheduler/autoscale"
)

// Autoscaler turns the gateways' load figures into replica counts for the
// autoscaled deployments: every Interval it reads the figures (Redis), feeds
// the pure rule (scheduler/autoscale) and writes a changed count through
// deployment.Scale, the scale API's own path, guarded by the count it read. The
// reconciler, woken by the NOTIFY, does the rest. A wake-up from a gateway
// holding requests for a model at zero is acted on at once. Only the leading
// scheduler runs it. Without figures (Redis down) it changes nothing.
type Autoscaler struct {
	DB       *pgxpool.Pool
	Redis    *redis.Client
	Prefix   string        // the gateways' Redis prefix
	Interval time.Duration // 1 s when 0; figures older than 3 intervals are ignored
	Log      *slog.Logger
	Metrics  *Metrics // optional

	mu          sync.Mutex
	samples     map[string][]autoscale.Sample
	lastRequest map[string]time.Time
}

// ScaleEvent is one change the autoscaler made.
type ScaleEvent struct {
	Model    string
	From, To int
	Reason   string
}

func (a *Autoscaler) interval() time.Duration {
	if a.Interval <= 0 {
		return time.Second
	}
	return a.Interval
}

// Run ticks and listens for wake-ups until ctx ends.
func (a *Autoscaler) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.listenWake(ctx)
	}()
	t := time.NewTicker(a.interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			if _, err := a.Tick(ctx); err != nil && ctx.Err() == nil {
				a.Log.Warn("autoscaler", "err", err)
			}
		}
	}
}

func (a *Autoscaler) listenWake(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := loadreport.WaitWake(ctx, a.Redis, a.Prefix, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				a.Log.Warn("autoscaler: wake-ups unavailable; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if w.Model == "" {
			continue
		}
		if ev, err := a.Wake(ctx, w); err != nil && ctx.Err() == nil {
			a.Log.Warn("autoscaler: wake-up", "model", w.Model, "err", err)
		} else if ev == nil {
			a.Log.Debug("autoscaler: wake-up for a model already scaled", "model", w.Model)
		}
	}
}

// load reads the autoscaled deployments (one when model is not "").
func (a *Autoscaler) load(ctx context.Context, model string) ([]deployment.Autoscaled, error) {
	return deployment.ListAutoscaled(ctx, a.DB, model)
}

// Tick reads the figures, records one sample per autoscaled model and
// applies the rule's decisions; it returns what changed.
func (a *Autoscaler) Tick(ctx context.Context) ([]ScaleEvent, error) {
	deps, err := a.load(ctx, "")
	if err != nil {
		return nil, err
	}
	if len(deps) == 0 {
		return nil, nil
	}
	totals, err := loadreport.Read(ctx, a.Redis, a.Prefix, 3*a.interval())
	if err != nil {
		return nil, fmt.Errorf("read load figures (no scaling without them): %w", err)
	}
	now := time.Now()
	var events []ScaleEvent
	var errs []error
	live := map[string]bool{}
	for _, d := range deps {
		live[d.Key()] = true
		tot := share(totals[d.Model], d.Share)
		in := a.record(d, tot, now)
		ev, err := a.decide(ctx, d, in)
		if err != nil {
			errs = append(errs, err)
		}
		if ev != nil {
			events = append(events, *ev)
		}
	}
	a.forget(live)
	return events, errors.Join(errs...)
}

// Wake scales a model from zero at once, if it is still at zero, to the
// replicas its held requests need (the rule's ceil(held/target) within the
// bounds): a burst gets one scale-up, not 0 → 1 and a second one a tick
// later. A repeated wake-up (several gateways, a resend) changes nothing.
func (a *Autoscaler) Wake(ctx context.Context, w loadreport.Wakeup) (*ScaleEvent, error) {
	// a wake-up names a deployment by its key: the model (its stable
	// track) or its canary's (deployment.Key), as the gateway's pools do
	key := w.Model
	model, _ := deployment.SplitKey(key)
	deps, err := a.load(ctx, model)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(deps, func(d deployment.Autoscaled) bool { return d.Key() == key })
	if i < 0 || deps[i].Replicas != 0 {
		return nil, nil
	}
	d := deps[i]
	now := time.Now()
	a.mu.Lock()
	a.init()
	a.lastRequest[key] = now
	samples := append(append([]autoscale.Sample(nil), a.samples[key]...), autoscale.Sample{At: now, Inflight: float64(w.Held)})
	in := autoscale.Input{Now: now, Current: 0, Bounds: autoscale.Bounds(d.Autoscale), Samples: samples,
		SinceScale: d.SinceScale, LastRequest: now, Wake: true}
	a.mu.Unlock()
	return a.decide(ctx, d, in)
}

func (a *Autoscaler) init() {
	if a.samples == nil {
		a.samples, a.lastRequest = map[string][]autoscale.Sample{}, map[string]time.Time{}
	}
}

// record adds this tick's sample of d and returns the rule's input.
func (a *Autoscaler) record(d deployment.Autoscaled, tot loadreport.Total, now time.Time) autoscale.Input {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	b := autoscale.Bounds(d.Autoscale).WithDefaults()
	keep := b.ScaleDownDelay + 2*a.interval()
	s := append(a.samples[d.Key()], autoscale.Sample{At: now, Inflight: tot.Inflight, Rate: tot.Rate})
	for len(s) > 0 && now.Sub(s[0].At) > keep {
		s = s[1:]
	}
	a.samples[d.Key()] = s
	last, seen := a.lastRequest[d.Key()]
	if tot.LastRequest.After(last) {
		last = tot.LastRequest
	}
	if !seen && last.IsZero() {
		// first sight (a new deployment, or this scheduler just took the
		// lead): give the model its whole idle_to_zero before zero
		last = now
	}
	a.lastRequest[d.Key()] = last
	return autoscale.Input{Now: now, Current: d.Replicas, Bounds: autoscale.Bounds(d.Autoscale), Samples: append([]autoscale.Sample(nil), s...),
		SinceScale: d.SinceScale, LastRequest: last, Wake: tot.Held > 0}
}

func (a *Autoscaler) forget(live map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for m := range a.samples {
		if !live[m] {
			delete(a.samples, m)
			delete(a.lastRequest, m)
		}
	}
}

// decide applies the rule to in and writes a changed count.
func (a *Autoscaler) decide(ctx context.Context, d deployment.Autoscaled, in autoscale.Input) (*ScaleEvent, error) {
	dec := autoscale.Decide(in)
	if !dec.Changed(d.Replicas) {
		return nil, nil
	}
	from := d.Replicas
	var changed bool
	err := pgx.BeginFunc(ctx, a.DB, func(tx pgx.Tx) error {
		var err error
		changed, err = deployment.Scale(ctx, tx, d.Key(), deployment.Change{Replicas: dec.Replicas, Reason: "autoscaler: " + dec.Reason, IfReplicas: &from})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("scale %s: %w", d.Key(), err)
	}
	if !changed { // someone scaled meanwhile: the next tick sees it
		return nil, nil
	}
	a.Log.Info("autoscaled", "model", d.Model, "track", d.Track, "from", from, "to", dec.Replicas, "reason", dec.Reason)
	if a.Metrics != nil {
		dir := "up"
		if dec.Replicas < from {
			dir = "down"
		}
		a.Metrics.scaled.WithLabelValues(d.Model, dir).Inc()
	}
	return &ScaleEvent{Model: d.Model, From: from, To: dec.Replicas, Reason: dec.Reason}, nil
}

// share is a track's part of its model's load figures (deployment.Autoscaled.Share):
// a canary of weight 10 % sees a tenth of the requests in flight and of the
// rate, its stable the rest. The last request's time is the model's.
func share(t loadreport.Total, f float64) loadreport.Total {
	if f >= 1 || f < 0 {
		return t
	}
	t.Inflight *= f
	t.Rate *= f
	t.Held = int(math.Ceil(float64(t.Held) * f))
	return t
}
