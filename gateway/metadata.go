package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
)

// maxMetadataBytes bounds a replica's metadata answer (a few hundred bytes).
const maxMetadataBytes = 64 << 10

// serveModelMetadata answers GET /v2/models/{model}: the Open Inference
// Protocol metadata of the model (inputs, outputs, its task and the engine
// it runs on), from one of its ready replicas (the runtime's
// GET /v2/models/{name}). Keys, private models and the
// rate limit are as for the model's infer route; the answer is the
// replica's, passed on as it is. Only one replica is asked: metadata does
// not wait for a cold start and is not retried.
func (g *Gateway) serveModelMetadata(w http.ResponseWriter, r *http.Request) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	_, m, ok := g.admit(w, r, st, r.PathValue("model"))
	if !ok || g.refuseOIP(w, st, m) {
		return
	}
	u := g.policy.Select(g.pool(m.Name).Upstreams(), r)
	if u == nil {
		g.triggerDiscovery()
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", m.Name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Addr+"/v2/models/"+m.Name, nil)
	if err != nil {
		g.fail(w, st, http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: %v", m.Name, err))
		return
	}
	req.Header["X-Request-Id"] = []string{requestID(r)}
	if auth := g.fleet.get(m.Name).callAuth; auth != "" {
		req.Header["Authorization"] = []string{auth}
	}
	t0 := time.Now()
	resp, err := g.prober.client.Do(req)
	if err == nil {
		defer resp.Body.Close()
	}
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
		if err == nil && len(body) > maxMetadataBytes {
			err = fmt.Errorf("metadata over %d bytes", maxMetadataBytes)
		}
	}
	st.upstream = time.Since(t0)
	switch {
	case err != nil && r.Context().Err() != nil:
		st.status = apierror.StatusClientClosed
	case err != nil:
		g.fail(w, st, http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q replica did not answer: %v", m.Name, err))
	case resp.StatusCode != http.StatusOK:
		// (a replica that serves another model answers 404: a routing
		// race, not the customer's mistake)
		g.fail(w, st, http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q replica answered %d", m.Name, resp.StatusCode))
	default:
		st.status = http.StatusOK
		w.Header()["Content-Type"] = jsonContentType
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}
}
