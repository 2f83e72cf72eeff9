package scheduler

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the scheduler's own figures (the autoscaler's changes and the
// replicas' cold starts as Swarm and the runtime report them).
type Metrics struct {
	scaled    *prometheus.CounterVec   // model, direction
	coldStart *prometheus.HistogramVec // phase
	// canaryRollbacks counts the automatic rule's rollbacks, by model.
	canaryRollbacks *prometheus.CounterVec
}

// NewMetrics registers the scheduler's metrics on reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		scaled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_scheduler_autoscaled_total",
			Help: "Replica count changes made by the autoscaler, by model and direction (up, down)."}, []string{"model", "direction"}),
		coldStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_scheduler_replica_start_seconds",
			Help:    "Replica cold starts by phase: scheduled (task created) → started (process) → ready (runtime) → running (Swarm healthcheck, in DNS); total is scheduled → running.",
			Buckets: []float64{.05, .1, .25, .5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120}}, []string{"phase"}),
		canaryRollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_scheduler_canary_rollbacks_total",
			Help: "Canaries the automatic rollback rule took out of the routing, by model."}, []string{"model"}),
	}
	if reg != nil {
		reg.MustRegister(m.scaled, m.coldStart, m.canaryRollbacks)
	}
	return m
}
