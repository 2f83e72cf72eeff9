package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

type gwError struct {
	status     int
	code, msg  string
	retryAfter int
}

type upstreamResult struct {
	status      int
	contentType string
	body        []byte
	// stream, when not nil, is the body of an answer relayed as it arrives
	// (isStream; body is then nil): whoever has the result closes it.
	stream io.ReadCloser
}

const maxUpstreamBody = 64 << 20

// forward sends body to a replica of model, retrying once on another replica
// after a connection error, a 503 (not ready) or a 429 (busy), within the
// model's deadline. The request context (client disconnect) cancels the
// upstream call. An autoscaled model with no replica holds the request until
// one is ready (holdForReplica). With stream (the pass-through), a streamed
// answer comes as upstreamResult.stream, for the caller to relay and close.
func (g *Gateway) forward(r *http.Request, model, path string, body []byte, stream bool, st *reqState) (*upstreamResult, *gwError) {
	timeout := g.opts.Timeout
	if t, ok := g.opts.modelTimeouts[model]; ok && t > 0 {
		timeout = t
	}
	// ctx ends when the client goes away
	ms := g.fleet.get(model)
	at := attempt{ctx: r.Context(), deadline: time.Now().Add(timeout), model: model, path: path, body: body, rid: r.Header.Get("X-Request-ID"), auth: ms.callAuth, stream: stream}
	ctx, deadline, rid := at.ctx, at.deadline, at.rid
	pool := &ms.pool
	load, end := arrive(&ms.load)
	defer end()
	if len(pool.Upstreams()) == 0 {
		if m, ok := g.catalog.Get(model); ok && m.Autoscaled {
			hctx, cancel := context.WithDeadline(ctx, deadline)
			aerr := g.holdForReplica(hctx, ctx, model, load, pool)
			cancel()
			if aerr != nil {
				return nil, aerr
			}
		}
	}
	var tried *Upstream
	var last *gwError
	for n := 0; n < 2; n++ {
		u := g.policy.Select(candidates(pool.Upstreams(), tried), r)
		if u == nil {
			if last != nil {
				return nil, last
			}
			g.triggerDiscovery()
			return nil, &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", model), 1}
		}
		if n > 0 {
			g.m.retries.WithLabelValues(model).Inc()
		}
		t0 := time.Now()
		res, err := g.try(&at, u)
		st.upstream += time.Since(t0)
		outcome := runtimeapi.Answered
		if err == nil {
			switch outcome = runtimeapi.Judge(res.status); outcome {
			case runtimeapi.Answered:
				u.markSuccess()
				return res, nil
			case runtimeapi.Faulty:
				g.failure(model, u, "status")
				return res, nil
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil, &gwError{status: 499}
		case !time.Now().Before(deadline):
			// (a dial timeout is DeadlineExceeded too, long before the
			// request's deadline: that is a replica gone, retried below)
			g.m.upErrors.WithLabelValues(model, "timeout").Inc()
			return nil, &gwError{http.StatusGatewayTimeout, "upstream_timeout", fmt.Sprintf("model %q did not answer within %s", model, timeout), 0}
		case err != nil:
			g.failure(model, u, "connect")
			g.triggerDiscovery()
			g.log.Warn("upstream failed", "request_id", rid, "model", model, "upstream", u.Addr, "err", err)
			last = &gwError{http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: replica unreachable", model), 0}
		case outcome == runtimeapi.Refused:
			// the platform's fault, not the customer's: never relayed as a
			// 401; another replica may hold a credential of this gateway's
			// secret (a rotation in progress), and this one is healthy
			g.m.upErrors.WithLabelValues(model, "refused").Inc()
			g.log.Error("replica refused the gateway's call credential: is --callsecretfile the scheduler's replica call secret?", "request_id", rid, "model", model, "upstream", u.Addr)
			last = &gwError{http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: the replica refused the gateway's call credential", model), 0}
		case outcome == runtimeapi.Busy:
			// a healthy replica with a full queue: another may take it, and
			// it never counts toward ejection
			g.m.upErrors.WithLabelValues(model, "busy").Inc()
			last = &gwError{http.StatusServiceUnavailable, runtimeapi.CodeOverloaded, fmt.Sprintf("model %q is busy; retry shortly", model), runtimeapi.RetryAfterSeconds}
		default: // runtimeapi.NotReady
			g.failure(model, u, "unavailable")
			last = &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", model), runtimeapi.RetryAfterSeconds}
		}
		tried = u
	}
	return nil, last
}

// attempt is what forward sends, the same to each replica it tries.
type attempt struct {
	ctx      context.Context // the customer request's: ends when the client goes away
	deadline time.Time       // the model's
	model    string
	path     string // on the runtime
	body     []byte
	rid      string // request ID, passed on
	auth     string // Authorization value: the model's call credential ("" none)
	stream   bool   // a streamed answer comes as upstreamResult.stream
	// (the request's reqState stays out: escape analysis would move it to
	// the heap with the fields that leak)
}

// try sends a to u, counting it in flight.
func (g *Gateway) try(a *attempt, u *Upstream) (*upstreamResult, error) {
	u.inflight.Add(1)
	inflight := g.m.forModel(a.model).inflight
	inflight.Inc()
	defer func() {
		u.inflight.Add(-1)
		inflight.Dec()
	}()
	return g.upstream.post(a.ctx, a.deadline, u, a.path, a.rid, a.auth, a.body, a.stream)
}
