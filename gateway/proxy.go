package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/internal/versionstats"
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

// forward sends body to a replica of m, retrying once on another replica
// after a connection error, a 503 (not ready) or a 429 (busy), within the
// model's deadline. The request context (client disconnect) cancels the
// upstream call. An autoscaled model with no replica holds the request until
// one is ready (holdForReplica). With stream (the pass-through), a streamed
// answer comes as upstreamResult.stream, for the caller to relay and close.
//
// A model with a canary (canary.go): the version that answers is picked
// here (pick), named in X-Model-Version on w, and its answer counted per
// version; a shadow gets its copy once the stable answer is in.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, m *Model, path string, body []byte, stream bool, st *reqState) (*upstreamResult, *gwError) {
	timeout := g.modelTimeout(m.Name)
	rid := requestID(r)
	if m.Canary == nil { // (the usual case: nothing else to do)
		if m.stableHdr != nil {
			w.Header()["X-Model-Version"] = m.stableHdr
		}
		return g.forwardTo(r.Context(), r, rid, m.Name, g.fleet.get(m.Name), m.Autoscaled, time.Now().Add(timeout), timeout, path, body, stream, &st.upstream)
	}
	t := g.pick(m, st.keyID)
	if t.hdr != nil {
		w.Header()["X-Model-Version"] = t.hdr
	}
	t0 := time.Now()
	res, aerr := g.forwardTo(r.Context(), r, rid, t.key, t.state, t.autoscaled, time.Now().Add(timeout), timeout, path, body, stream, &st.upstream)
	if counted, fail := failed(res, aerr); counted {
		g.vstats.record(versionstats.Series{Model: m.Name, Version: t.version}, time.Since(t0), fail)
	}
	if m.Canary.shadow() {
		g.shadowCopy(m, path, body, res, rid, timeout)
	}
	return res, aerr
}

// modelTimeout is the deadline of a request to model: its own, else the
// gateway's.
func (g *Gateway) modelTimeout(model string) time.Duration {
	if t, ok := g.opts.modelTimeouts[model]; ok && t > 0 {
		return t
	}
	return g.opts.Timeout
}

// forwardTo is forward's work on one deployment's pool (key: its
// deployment.Key; ms: its state, as the request found it), with ctx the request's (the client's, or a shadow
// copy's), r the customer's request for the Policy (nil for a shadow
// copy); with hold, an autoscaled deployment at zero holds the request.
// The time spent on replicas adds to spent. deadline is the call's time
// plus timeout (forwardTo takes its start from it).
func (g *Gateway) forwardTo(ctx context.Context, r *http.Request, rid, key string, ms *modelState, hold bool, deadline time.Time, timeout time.Duration, path string, body []byte, stream bool, spent *time.Duration) (res *upstreamResult, aerr *gwError) {
	model := key                        // (the metrics and logs name the deployment,
	name, _ := deployment.SplitKey(key) // the answers the model)
	at := attempt{ctx: ctx, deadline: deadline, model: model, path: path, body: body, rid: rid, auth: ms.callAuth, stream: stream}
	pool := &ms.pool
	now := deadline.Add(-timeout) // (when forward was called: no clock read)
	load, end := arrive(&ms.load, now)
	defer func() {
		// a streamed answer (a generation) is in flight until its relay
		// closes it, not only until its head arrived: the autoscaler's
		// load and the replica's in-flight count (balancing) see it whole
		if res != nil && res.stream != nil {
			res.stream = &onClose{ReadCloser: res.stream, f: end}
			return
		}
		end()
	}()
	if hold && len(pool.Upstreams()) == 0 {
		hctx, cancel := context.WithDeadline(ctx, deadline)
		aerr := g.holdForReplica(hctx, ctx, model, load, pool)
		cancel()
		if aerr != nil {
			return nil, aerr
		}
		now = time.Now() // (the hold is not upstream time)
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
			return nil, &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", name), 1}
		}
		if n > 0 {
			g.m.retries.WithLabelValues(model).Inc()
		}
		t0 := now // (the first attempt's start: forward's or the hold's end, microseconds before)
		if n > 0 {
			t0 = time.Now()
		}
		res, err := g.try(&at, u)
		*spent += time.Since(t0)
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
			return nil, &gwError{status: apierror.StatusClientClosed}
		case !time.Now().Before(deadline):
			// (a dial timeout is DeadlineExceeded too, long before the
			// request's deadline: that is a replica gone, retried below)
			g.m.upErrors.WithLabelValues(model, "timeout").Inc()
			return nil, &gwError{http.StatusGatewayTimeout, "upstream_timeout", fmt.Sprintf("model %q did not answer within %s", name, timeout), 0}
		case err != nil:
			g.failure(model, u, "connect")
			g.triggerDiscovery()
			g.log.Warn("upstream failed", "request_id", rid, "model", model, "upstream", u.Addr, "err", err)
			last = &gwError{http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: replica unreachable", name), 0}
		case outcome == runtimeapi.Refused:
			// the platform's fault, not the customer's: never relayed as a
			// 401; another replica may hold a credential of this gateway's
			// secret (a rotation in progress), and this one is healthy
			g.m.upErrors.WithLabelValues(model, "refused").Inc()
			g.log.Error("replica refused the gateway's call credential: is --callsecretfile the scheduler's replica call secret?", "request_id", rid, "model", model, "upstream", u.Addr)
			last = &gwError{http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: the replica refused the gateway's call credential", name), 0}
		case outcome == runtimeapi.Busy:
			// a healthy replica with a full queue: another may take it, and
			// it never counts toward ejection
			g.m.upErrors.WithLabelValues(model, "busy").Inc()
			last = &gwError{http.StatusServiceUnavailable, runtimeapi.CodeOverloaded, fmt.Sprintf("model %q is busy; retry shortly", name), runtimeapi.RetryAfterSeconds}
		default: // runtimeapi.NotReady
			g.failure(model, u, "unavailable")
			last = &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", name), runtimeapi.RetryAfterSeconds}
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

// try sends a to u, counting it in flight until its answer is in: for a
// streamed answer, until the stream is closed.
func (g *Gateway) try(a *attempt, u *Upstream) (*upstreamResult, error) {
	u.inflight.Add(1)
	inflight := g.m.forModel(a.model).inflight
	inflight.Inc()
	res, err := g.upstream.post(a.ctx, a.deadline, u, a.path, a.rid, a.auth, a.body, a.stream)
	if err == nil && res.stream != nil {
		res.stream = &onClose{ReadCloser: res.stream, f: func() {
			u.inflight.Add(-1)
			inflight.Dec()
		}}
		return res, nil
	}
	u.inflight.Add(-1)
	inflight.Dec()
	return res, err
}

// onClose is a streamed answer's body that runs f once, at its first Close.
type onClose struct {
	io.ReadCloser
	f func()
}

func (c *onClose) Close() error {
	err := c.ReadCloser.Close()
	if c.f != nil {
		c.f()
		c.f = nil
	}
	return err
}
