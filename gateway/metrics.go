package gateway

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/versionstats"
)

type metrics struct {
	requests   *prometheus.CounterVec   // model, status
	latency    *prometheus.HistogramVec // model
	added      *prometheus.HistogramVec // model: gateway time minus upstream time
	upErrors   *prometheus.CounterVec   // model, kind
	retries    *prometheus.CounterVec   // model
	inflight   *prometheus.GaugeVec     // model
	ejections  *prometheus.CounterVec   // model
	replicas   *prometheus.GaugeVec     // model
	failOpen   prometheus.Counter
	shed       *prometheus.CounterVec // requests refused to protect the gateway, by code
	usageFlush *prometheus.CounterVec // result
	usageRisk  *prometheus.CounterVec // kind: rejected (rows), unspooled (requests)
	usageQueue prometheus.Gauge       // batches not yet in Postgres
	tokens     *prometheus.CounterVec // model, kind (input, output): generation tokens metered
	// autoscaling (autoscale.go)
	held         *prometheus.GaugeVec     // model
	holdSeconds  *prometheus.HistogramVec // model
	holdRefused  *prometheus.CounterVec   // model
	holdTimeouts *prometheus.CounterVec   // model
	wakeups      *prometheus.CounterVec   // model
	loadReports  *prometheus.CounterVec   // result
	// canary and shadow (canary.go, versions.go)
	versionRequests  *prometheus.CounterVec   // model, version, traffic (live, shadow), result (ok, error)
	versionDuration  *prometheus.HistogramVec // model, version, traffic
	shadowCompared   *prometheus.CounterVec   // model, version, result (agreed, disagreed)
	shadowDropped    *prometheus.CounterVec   // model, reason (full, no_replica)
	canaryFallbacks  *prometheus.CounterVec   // model
	versionPublishes *prometheus.CounterVec   // result

	series sync.Map // model -> *modelSeries
}

// modelSeries are the series every request of one model touches, looked up
// once: WithLabelValues hashes and compares the labels on each call. (Series
// of a model are never deleted, so a cached one stays the registered one.)
type modelSeries struct {
	ok       prometheus.Counter // requests answered 200
	latency  prometheus.Observer
	added    prometheus.Observer
	inflight prometheus.Gauge
}

// forModel is model's modelSeries; model is a catalogue name or "-", so the
// cache is bounded by the models ever deployed.
func (m *metrics) forModel(model string) *modelSeries {
	if s, ok := m.series.Load(model); ok {
		return s.(*modelSeries)
	}
	s, _ := m.series.LoadOrStore(model, &modelSeries{
		ok: m.requests.WithLabelValues(model, "200"), latency: m.latency.WithLabelValues(model),
		added: m.added.WithLabelValues(model), inflight: m.inflight.WithLabelValues(model),
	})
	return s.(*modelSeries)
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_requests_total",
			Help: "Customer requests by model and HTTP status."}, []string{"model", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_gateway_request_duration_seconds",
			Help: "Time to answer a customer request.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"model"}),
		added: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_gateway_added_latency_seconds",
			Help: "Latency the gateway adds on top of the upstream time.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14)}, []string{"model"}),
		upErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_upstream_errors_total",
			Help: "Failed upstream attempts by model and kind (connect, status, timeout, busy, unavailable, refused: the replica refused the call credential)."}, []string{"model", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_retries_total",
			Help: "Requests retried on another replica."}, []string{"model"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_gateway_inflight_requests",
			Help: "Upstream requests in flight by model."}, []string{"model"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_ejections_total",
			Help: "Replicas ejected by passive health checks."}, []string{"model"}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_gateway_replicas",
			Help: "Replicas discovered by model."}, []string{"model"}),
		failOpen: prometheus.NewCounter(prometheus.CounterOpts{Name: "nlpswarm_gateway_ratelimit_failopen_total",
			Help: "Requests let through without rate limit or quota because Redis failed."}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_shed_total",
			Help: "Requests refused to protect the gateway: too_many_inflight (per key), overloaded (body bytes), too_many_unauthorized (401s per address)."}, []string{"code"}),
		usageFlush: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_usage_flushes_total",
			Help: "Usage flushes to Postgres by result."}, []string{"result"}),
		usageRisk: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_usage_at_risk_total",
			Help: "Usage not safely kept: rejected (rows Postgres refused for their data, skipped and logged, in the spool's rejected.log), unspooled (requests counted in memory only: the spool full or unwritable; a kill loses them)."}, []string{"kind"}),
		usageQueue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nlpswarm_gateway_usage_pending_batches",
			Help: "Usage batches not yet written to Postgres (spooled on disk when a spool is set)."}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_tokens_total",
			Help: "Generation tokens metered, by model and kind (input: the prompt, output: the completion), from the answers' usage."}, []string{"model", "kind"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_gateway_held_requests",
			Help: "Requests held while a model at zero starts a replica."}, []string{"model"}),
		holdSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_gateway_hold_seconds",
			Help: "How long held requests waited for a replica of a model at zero.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"model"}),
		holdRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_hold_refused_total",
			Help: "Requests for a model at zero refused (503) because the hold was full."}, []string{"model"}),
		holdTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_hold_timeouts_total",
			Help: "Held requests whose deadline passed before a replica was ready (503)."}, []string{"model"}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_wakeups_total",
			Help: "Replicas asked for models at zero."}, []string{"model"}),
		loadReports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_load_reports_total",
			Help: "Load figures published to Redis for the autoscaler, by result."}, []string{"result"}),
		versionRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_version_requests_total",
			Help: "Answers of the versions of a model with a canary, by model, version, traffic (live: customer requests; shadow: copies) and result (error: a 5xx or no answer)."}, []string{"model", "version", "traffic", "result"}),
		versionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_gateway_version_duration_seconds",
			Help: "Time a version of a model with a canary took to answer (replica calls, retries included), by model, version and traffic.", Buckets: versionBuckets()}, []string{"model", "version", "traffic"}),
		shadowCompared: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_shadow_comparisons_total",
			Help: "Outputs of a shadow version compared with the stable version's answer, by model, shadow version and result (agreed: same top label, same entities, embeddings at cosine >= 0.99)."}, []string{"model", "version", "result"}),
		shadowDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_shadow_dropped_total",
			Help: "Shadow copies not sent, by model and reason (full: --shadowinflight copies already in flight; no_replica: the shadow has no available replica; busy: every shadow replica's queue was full)."}, []string{"model", "reason"}),
		canaryFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_canary_fallbacks_total",
			Help: "Requests the split gave a canary that had no available replica, answered by the stable version instead."}, []string{"model"}),
		versionPublishes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_gateway_version_stats_publishes_total",
			Help: "Per-version figures published to Redis (internal/versionstats), by result."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.added, m.upErrors, m.retries, m.inflight, m.ejections, m.replicas, m.failOpen, m.shed, m.usageFlush, m.usageRisk, m.usageQueue,
			m.tokens, m.held, m.holdSeconds, m.holdRefused, m.holdTimeouts, m.wakeups, m.loadReports,
			m.versionRequests, m.versionDuration, m.shadowCompared, m.shadowDropped, m.canaryFallbacks, m.versionPublishes)
	}
	return m
}

// versionBuckets are versionstats' latency bounds in seconds: the Redis
// figures and the histogram agree bucket for bucket.
func versionBuckets() []float64 {
	out := make([]float64, len(versionstats.Bounds))
	for i, b := range versionstats.Bounds {
		out[i] = b.Seconds()
	}
	return out
}
