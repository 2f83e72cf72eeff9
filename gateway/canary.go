package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

// Canary and shadow (issue 20), the gateway's part: a model with a routed
// canary (Model.Canary) runs two versions, each on its own replicas, its
// own pool in the fleet (the canary's under deployment.Key(model,
// TrackCanary)), discovered, balanced, retried, ejected and held at zero
// on its own.
//
//   - canary mode: each request falls at a point of [0, 100) (splitPoint:
//     random, or with Sticky the hash of the model and the API key's id, the
//     same on every gateway) and the canary answers it when the point is
//     below its weight (toCanary). A sticky key stays on its side while the
//     weight holds; a weight that grows only moves keys to the canary. A
//     canary with no available replica (starting, all ejected) does not
//     fail the request: the stable version answers it
//     (nlpswarm_gateway_canary_fallbacks_total), and an autoscaled canary
//     at zero is woken.
//   - shadow mode: the stable version answers every request; once its
//     answer is in, a copy of the request goes to the canary in the
//     background (shadowCopy), never billed nor limited, never waited for:
//     at most Config.ShadowInflight copies per model are in flight, a copy
//     beyond is dropped and counted (nlpswarm_gateway_shadow_dropped_total),
//     and so is a copy every shadow replica refuses as busy (its queue full:
//     a shadow with too few replicas for the traffic, which is not the
//     version's error).
//     The two answers are compared (agree.go) into the shadow agreement.
//
// Every answer from a model with a canary says which version gave it
// (X-Model-Version, set for every model whose version is known), and is
// counted per version (versionstats.go: Prometheus and the Redis figures
// the scheduler's automatic rollback and `status` read).

// splitPoint is where a request of keyID for model falls in [0, 100): the
// key's own point when sticky, else a random one.
func splitPoint(model string, sticky bool, keyID int64) float64 {
	if sticky {
		return stickyPoint(model, keyID)
	}
	return rand.Float64() * 100
}

// stickyPoint hashes model and keyID into [0, 100), the same on every
// gateway and restart (FNV-1a, then splitmix64's finalizer so that
// consecutive key ids spread evenly). The model is part of it, so that the
// keys a canary takes are not the same keys for every model.
func stickyPoint(model string, keyID int64) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(model))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(keyID))
	_, _ = h.Write(b[:])
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53) * 100
}

// toCanary reports whether a request at point goes to a canary of weight
// (percent): below the weight it does.
func toCanary(weight, point float64) bool { return point < weight }

// target is the deployment that answers one request.
type target struct {
	key        string      // the fleet's pool: deployment.Key
	state      *modelState // its state in the fleet
	version    int
	hdr        []string // X-Model-Version's value (nil: unknown)
	autoscaled bool
}

// pick chooses the deployment of m that answers a request of keyID.
func (g *Gateway) pick(m *Model, keyID int64) target {
	c := m.Canary
	if c != nil && !c.shadow() && toCanary(c.Weight, splitPoint(m.Name, c.Sticky, keyID)) {
		cs := g.fleet.get(c.key)
		if anyAvailable(cs.pool.Upstreams()) {
			return target{key: c.key, state: cs, version: c.Version, hdr: c.hdr, autoscaled: c.Autoscaled}
		}
		g.m.canaryFallbacks.WithLabelValues(m.Name).Inc()
		if c.Autoscaled {
			g.wake(c.key, &cs.load)
		}
	}
	return target{key: m.Name, state: g.fleet.get(m.Name), version: m.Version, hdr: m.stableHdr, autoscaled: m.Autoscaled}
}

// anyAvailable reports whether pool has a replica that takes requests.
func anyAvailable(pool []*Upstream) bool {
	for _, u := range pool {
		if u.Available() {
			return true
		}
	}
	return false
}

// failed says whether an answer counts as the version's error: a 5xx or no
// answer; 4xx are the customer's. A client gone (499) counts for nothing.
func failed(res *upstreamResult, aerr *gwError) (counted, fail bool) {
	switch {
	case aerr != nil:
		return aerr.status != apierror.StatusClientClosed, true
	case res == nil:
		return false, false
	}
	return true, res.status >= http.StatusInternalServerError
}

// shadowCopy sends a copy of a request that the stable version answered
// (stable: its answer, nil when it gave none) to m's shadow canary in the
// background and compares the answers there. It returns at once: a copy
// that finds the model's shadow copies at their cap, or no replica of the
// canary, is dropped and counted.
func (g *Gateway) shadowCopy(m *Model, path string, body []byte, stable *upstreamResult, rid string, timeout time.Duration) {
	c := m.Canary
	if g.closed.Load() {
		return
	}
	cs := g.fleet.get(c.key)
	if !anyAvailable(cs.pool.Upstreams()) {
		g.m.shadowDropped.WithLabelValues(m.Name, "no_replica").Inc()
		if c.Autoscaled {
			g.wake(c.key, &cs.load)
		}
		return
	}
	if n := cs.shadows.Add(1); n > int64(g.opts.ShadowInflight) {
		cs.shadows.Add(-1)
		g.m.shadowDropped.WithLabelValues(m.Name, "full").Inc()
		return
	}
	g.shadowsRunning.Add(1)
	var want []byte
	if stable != nil && stable.status == http.StatusOK && stable.stream == nil {
		want = stable.body // (a fresh buffer of its own, never reused: upstream.go)
	}
	req := bytes.Clone(body) // (the request's buffer goes back to its pool after the answer)
	series := versionstats.Series{Model: m.Name, Version: c.Version, Shadow: true}
	task, gguf := m.Task, m.GGUF
	go func() {
		defer g.shadowsRunning.Add(-1)
		defer cs.shadows.Add(-1)
		ctx, cancel := context.WithTimeout(g.shadowCtx, timeout)
		defer cancel()
		var spent time.Duration
		t0 := time.Now()
		res, aerr := g.forwardTo(ctx, nil, rid, c.key, cs, false, time.Now().Add(timeout), timeout, path, req, false, &spent)
		if g.shadowCtx.Err() != nil { // the gateway closing: not the version's failure
			return
		}
		if aerr != nil && aerr.code == runtimeapi.CodeOverloaded {
			// every shadow replica's queue full: the shadow has fewer
			// replicas than the traffic it copies needs, not a broken
			// version; dropped like a copy beyond the cap
			g.m.shadowDropped.WithLabelValues(m.Name, "busy").Inc()
			return
		}
		if counted, fail := failed(res, aerr); counted {
			g.vstats.record(series, time.Since(t0), fail)
			if !fail && want != nil && res.status == http.StatusOK {
				if n, ok := agreement(task, gguf, path, want, res.body); n > 0 {
					g.vstats.compare(series, n, ok)
				}
			}
		}
	}()
}
