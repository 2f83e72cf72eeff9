package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/loadreport"
)

// The gateway's part of autoscaling (issue 10):
//
//   - it counts, per model, the requests in flight (held ones included) and
//     the arrivals, samples the in-flight count every 100 ms and publishes a
//     one-second summary to Redis (loadreport) for the scheduler's autoscaler;
//   - a request for an autoscaled model with no replica is held (at most
//     HoldMax per model; beyond, 503 with Retry-After), the first held request
//     asks for a replica (one wake-up per hold, resent only if nothing came
//     within WakeResend), and the held requests are released to the first
//     replica that answers /v2/health/ready, looked up every HoldPoll, within
//     each request's own deadline (then 503 with Retry-After).

// modelLoad is one model's autoscaling state in this gateway.
type modelLoad struct {
	inflight atomic.Int64 // customer requests being served or held
	arrivals atomic.Int64 // since the last report
	last     atomic.Int64 // unix ms of the last arrival
	held     atomic.Int64
	wokeAt   atomic.Int64 // unix nanos of the last wake-up sent (0: none pending)

	// owned by the load loop
	sum     float64
	samples int

	mu      sync.Mutex
	ready   chan struct{} // closed when held requests may go
	polling bool
}

func (g *Gateway) load(model string) *modelLoad { return &g.fleet.get(model).load }

// arrive counts a request in l, arrived at now; the returned func ends it.
func arrive(l *modelLoad, now time.Time) (*modelLoad, func()) {
	l.inflight.Add(1)
	l.arrivals.Add(1)
	l.last.Store(now.UnixMilli())
	return l, func() { l.inflight.Add(-1) }
}

func defaultGatewayID() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// loopLoad samples the in-flight counts and publishes the figures.
func (g *Gateway) loopLoad(ctx context.Context) {
	defer g.done.Done()
	st := time.NewTicker(100 * time.Millisecond)
	rt := time.NewTicker(g.opts.LoadReport)
	defer st.Stop()
	defer rt.Stop()
	lastReport := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.C:
			g.fleet.each(func(_ string, s *modelState) {
				s.load.sum += float64(s.load.inflight.Load())
				s.load.samples++
			})
		case now := <-rt.C:
			period := now.Sub(lastReport).Seconds()
			lastReport = now
			figures := map[string]loadreport.Figures{}
			g.fleet.each(func(model string, s *modelState) {
				l := &s.load
				f := loadreport.Figures{Held: int(l.held.Load()), Requests: l.arrivals.Swap(0), Period: period, LastRequest: l.last.Load()}
				if l.samples > 0 {
					f.Inflight = l.sum / float64(l.samples)
				}
				// a burst shorter than a sample still counts as in flight
				f.Inflight = max(f.Inflight, float64(l.inflight.Load()))
				l.sum, l.samples = 0, 0
				figures[model] = f
			})
			if g.rdb == nil {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			err := loadreport.Publish(pctx, g.rdb, g.opts.RedisPrefix, g.opts.GatewayID, figures, 3*g.opts.LoadReport)
			cancel()
			if err != nil && ctx.Err() == nil {
				g.m.loadReports.WithLabelValues("error").Inc()
				g.log.Debug("load report failed", "err", err)
			} else {
				g.m.loadReports.WithLabelValues("ok").Inc()
			}
		}
	}
}

// holdForReplica holds a request for an autoscaled model that has no replica
// until one is ready, the request's deadline passes, or the hold is full.
func (g *Gateway) holdForReplica(ctx, clientCtx context.Context, model string, l *modelLoad, pool *Pool) *gwError {
	retry := max(1, int(math.Ceil(g.opts.HoldRetryAfter.Seconds())))
	name, _ := deployment.SplitKey(model) // (model is a deployment.Key)
	if n := l.held.Add(1); n > int64(g.opts.HoldMax) {
		l.held.Add(-1)
		g.m.holdRefused.WithLabelValues(model).Inc()
		return &gwError{http.StatusServiceUnavailable, "model_starting",
			fmt.Sprintf("model %q is starting from zero and %d requests already wait for it; retry in %ds", name, g.opts.HoldMax, retry), retry}
	}
	defer l.held.Add(-1)
	g.m.held.WithLabelValues(model).Inc()
	defer g.m.held.WithLabelValues(model).Dec()
	start := time.Now()
	for len(pool.Upstreams()) == 0 {
		ready := g.watch(model, l)
		g.wake(model, l)
		select {
		case <-ready:
		case <-ctx.Done():
			if clientCtx.Err() != nil {
				return &gwError{status: apierror.StatusClientClosed}
			}
			g.m.holdTimeouts.WithLabelValues(model).Inc()
			return &gwError{http.StatusServiceUnavailable, "no_replica",
				fmt.Sprintf("model %q is starting from zero and no replica was ready within the request's deadline; retry in %ds", name, retry), retry}
		}
	}
	g.m.holdSeconds.WithLabelValues(model).Observe(time.Since(start).Seconds())
	return nil
}

// watch returns the channel closed when held requests for model may go, and
// makes sure one poller looks for a ready replica.
func (g *Gateway) watch(model string, l *modelLoad) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.polling {
		l.polling = true
		go g.pollReplicas(model, l)
	}
	return l.ready
}

// wake asks the scheduler for a replica: once per hold, again only after
// WakeResend without a replica.
func (g *Gateway) wake(model string, l *modelLoad) {
	now := time.Now().UnixNano()
	last := l.wokeAt.Load()
	if last != 0 && now-last < int64(g.opts.WakeResend) {
		return
	}
	if !l.wokeAt.CompareAndSwap(last, now) {
		return
	}
	if g.rdb == nil {
		g.log.Warn("model at zero but no Redis to ask for a replica", "model", model)
		return
	}
	g.m.wakeups.WithLabelValues(model).Inc()
	go func() {
		g.awaitBurst(l)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := loadreport.Wake(ctx, g.rdb, g.opts.RedisPrefix, loadreport.Wakeup{Model: model, Held: int(l.held.Load())}); err != nil {
			l.wokeAt.Store(0) // let the next held request try again
			g.log.Warn("cannot ask for a replica of a model at zero", "model", model, "err", err)
			return
		}
		g.log.Info("asked for a replica of a model at zero", "model", model, "held", l.held.Load())
	}()
}

// awaitBurst returns once no request has joined the hold for 50 ms, or
// after WakeCoalesce at most: a burst arrives over some milliseconds (tens
// under load: a fresh-clone CI run saw 2 of 100 requests, then a gap of
// over 20 ms while the other connections were set up), and a wake-up that
// carries it whole lets the scheduler scale once, to what the burst needs,
// instead of 0 → 1 and again a second later. A lone request waits 50 ms,
// against a cold start of 1.5 s or more.
func (g *Gateway) awaitBurst(l *modelLoad) {
	const step, quiet = 5 * time.Millisecond, 50 * time.Millisecond
	end := time.Now().Add(g.opts.WakeCoalesce)
	last, still := l.held.Load(), time.Duration(0)
	for still < quiet && time.Now().Before(end) {
		time.Sleep(step)
		if n := l.held.Load(); n != last {
			last, still = n, 0
		} else {
			still += step
		}
	}
}

// pollReplicas looks the model's replicas up every HoldPoll while requests
// are held; the first that answers ready goes into the pool and releases them.
func (g *Gateway) pollReplicas(model string, l *modelLoad) {
	t := time.NewTicker(g.opts.HoldPoll)
	defer t.Stop()
	for {
		l.mu.Lock()
		if l.held.Load() == 0 || g.closed.Load() {
			l.polling = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if ready := g.readyReplicas(model); len(ready) > 0 {
			if g.fleet.admitReady(model, ready) {
				g.log.Info("replica ready for held requests", "model", model, "replicas", ready, "held", l.held.Load())
			}
			l.wokeAt.Store(0)
			l.mu.Lock()
			close(l.ready)
			l.ready = make(chan struct{})
			l.mu.Unlock()
		}
		<-t.C
	}
}

// readyReplicas looks model up and returns the addresses that answer
// /v2/health/ready with 200.
func (g *Gateway) readyReplicas(model string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := g.discovery.lookup(ctx, model)
	if err != nil || len(addrs) == 0 {
		return nil
	}
	return g.prober.readyOf(ctx, addrs)
}
