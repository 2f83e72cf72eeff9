package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
)

// PlanPath is where the scheduler serves its dry run.
const PlanPath = "/plan"

// PlanTimeout bounds one dry run (a few Postgres reads and one service list).
const PlanTimeout = 10 * time.Second

// PlanHandler serves GET PlanPath: the plan a reconcile pass would carry out
// now, computed by any scheduler replica (leading or not) from the same
// inputs as a pass, with nothing done. The apiserver relays it to
// `nlpswarm status --plan`, with the read token (ReadOnly).
func (r *Reconciler) PlanHandler(readToken string) http.Handler {
	return ReadOnly(readToken, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !getOnly(w, req) {
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), PlanTimeout)
		defer cancel()
		p, err := r.Plan(ctx)
		if err != nil {
			r.Log.Warn("dry run", "err", err)
			apierror.Write(w, http.StatusServiceUnavailable, "unavailable", "the scheduler cannot read its inputs now (Postgres or the Docker engine); retry shortly")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	}))
}

// ReadOnly serves h, one of the scheduler's read endpoints (/plan, /sd:
// task addresses, service and node names), only to requests that carry
// readToken as their bearer token (the Docker secret scheduler_read_token,
// held by the apiserver and Prometheus); others get 401. An empty
// readToken leaves h open (a scheduler started by hand; it logs so).
func ReadOnly(readToken string, h http.Handler) http.Handler {
	if readToken == "" {
		return h
	}
	return bearer.Require(readToken, "the scheduler read token", h)
}

// getOnly answers 405 to anything but GET, and says whether req is a GET.
func getOnly(w http.ResponseWriter, req *http.Request) bool {
	if req.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	apierror.Write(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET only")
	return false
}
