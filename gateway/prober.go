package gateway

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// prober is the gateway's one readiness check of replicas (GET
// /v2/health/ready answering 200): it returns ejected replicas to their pool
// and finds the first ready replica of a model at zero (autoscale.go).
type prober struct {
	client *http.Client
}

// ready reports whether the replica at addr answers ready within ctx.
func (p *prober) ready(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+runtimeapi.PathReady, nil)
	if err != nil {
		return false
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// readyOf checks addrs at once and returns those ready, in their order.
func (p *prober) readyOf(ctx context.Context, addrs []string) []string {
	ok := make([]bool, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { ok[i] = p.ready(ctx, a) })
	}
	wg.Wait()
	var out []string
	for i, a := range addrs {
		if ok[i] {
			out = append(out, a)
		}
	}
	return out
}

// failure counts a failed attempt on u; the failure that ejects it starts an
// active probe that returns it to the pool once /v2/health/ready answers 200.
func (g *Gateway) failure(model string, u *Upstream, kind string) {
	g.m.upErrors.WithLabelValues(model, kind).Inc()
	if !u.markFailure(g.opts.EjectAfter) {
		return
	}
	g.m.ejections.WithLabelValues(model).Inc()
	g.log.Warn("replica ejected", "model", model, "upstream", u.Addr, "after_failures", g.opts.EjectAfter)
	if !u.probing.CompareAndSwap(false, true) {
		return
	}
	go g.probeEjected(model, u)
}

// probeEjected probes an ejected replica every ProbeInterval until it is
// ready again (then readmits it), gone from the pool, or the gateway closes.
func (g *Gateway) probeEjected(model string, u *Upstream) {
	defer u.probing.Store(false)
	t := time.NewTicker(g.opts.ProbeInterval)
	defer t.Stop()
	for range t.C {
		if g.closed.Load() || !g.fleet.contains(model, u) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok := g.prober.ready(ctx, u.Addr)
		cancel()
		if ok {
			u.fails.Store(0)
			u.ejected.Store(false)
			g.log.Info("replica back in the pool", "model", model, "upstream", u.Addr)
			return
		}
	}
}
