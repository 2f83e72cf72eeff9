package gateway

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// modelState is the gateway's state of one deployment (a model's stable
// track, or its canary: named by deployment.Key): its replica pool, its
// autoscaling figures (autoscale.go) and the Authorization value its
// replicas require.
type modelState struct {
	pool Pool
	load modelLoad
	// callAuth carries the model's call credential (artifactcred.Call, of
	// the model's name: both tracks' replicas hold it), derived once per
	// deployment; "" without a call key
	callAuth string
	// shadows counts the shadow copies in flight to a canary (canary.go)
	shadows atomic.Int64
}

// fleet holds every deployment's state, by deployment.Key. It is the one writer of the replica
// pools: discovery's findings (apply) and the first ready replica of a model
// at zero (admitReady) both go through it; the request path only reads them.
type fleet struct {
	models  sync.Map // model name -> *modelState
	log     *slog.Logger
	m       *metrics
	callKey []byte // derives each model's callAuth
}

func newFleet(log *slog.Logger, m *metrics, callKey []byte) *fleet {
	return &fleet{log: log, m: m, callKey: callKey}
}

// get returns the state of the deployment key (deployment.Key), made on
// first use.
func (f *fleet) get(key string) *modelState {
	if s, ok := f.models.Load(key); ok {
		return s.(*modelState)
	}
	ns := &modelState{load: modelLoad{ready: make(chan struct{})}}
	model, _ := deployment.SplitKey(key)
	if cred := artifactcred.Call(f.callKey, model); cred != "" {
		ns.callAuth = bearer.Header(cred)
	}
	s, _ := f.models.LoadOrStore(key, ns)
	return s.(*modelState)
}

// each calls fn for every model known.
func (f *fleet) each(fn func(model string, s *modelState)) {
	f.models.Range(func(k, v any) bool {
		fn(k.(string), v.(*modelState))
		return true
	})
}

// apply sets the replicas that discovery found (found) and forgets the
// deployments no longer routed (a model undeployed, a canary promoted or
// rolled back): their kept-alive connections close, those of requests
// still in flight there once they end.
func (f *fleet) apply(found replicaSnapshot) {
	for model, addrs := range found.Addrs {
		if f.get(model).pool.Set(addrs) {
			f.log.Info("replicas changed", "model", model, "replicas", addrs)
		}
		f.m.replicas.WithLabelValues(model).Set(float64(len(addrs)))
	}
	f.models.Range(func(k, v any) bool {
		if model := k.(string); !found.Live[model] {
			f.models.Delete(model)
			f.m.replicas.DeleteLabelValues(model)
			for _, u := range v.(*modelState).pool.Upstreams() {
				if c := u.conns.Load(); c != nil {
					c.close()
				}
			}
		}
		return true
	})
}

// admitReady puts the ready replicas of a model at zero into its pool while
// it is still empty (discovery may have filled it meanwhile); it reports
// whether it did.
func (f *fleet) admitReady(model string, ready []string) bool {
	p := &f.get(model).pool
	if len(p.Upstreams()) > 0 {
		return false
	}
	p.Set(ready)
	return true
}

// contains reports whether u is still one of model's replicas.
func (f *fleet) contains(model string, u *Upstream) bool {
	s, ok := f.models.Load(model)
	if !ok {
		return false
	}
	for _, x := range s.(*modelState).pool.Upstreams() {
		if x == u {
			return true
		}
	}
	return false
}

// closeIdle drops the idle upstream connections of every replica.
func (f *fleet) closeIdle() {
	f.each(func(_ string, s *modelState) {
		for _, u := range s.pool.Upstreams() {
			if c := u.conns.Load(); c != nil {
				c.closeIdle()
			}
		}
	})
}
