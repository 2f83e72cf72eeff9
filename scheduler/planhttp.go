package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
)

// PlanPath is where the scheduler serves its dry run.
const PlanPath = "/plan"

// PlanTimeout bounds one dry run (a few Postgres reads and one service list).
const PlanTimeout = 10 * time.Second

// PlanHandler serves GET PlanPath: the plan a reconcile pass would carry out
// now, computed by any scheduler replica (leading or not) from the same
// inputs as a pass, with nothing done. The apiserver relays it to
// `nlpswarm status --plan`.
func (r *Reconciler) PlanHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
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
	})
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
