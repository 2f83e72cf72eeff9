// Package coldstart is the record of a model runtime's start: when its
// process started, how long the artifact took to fetch (and whether the
// node's cache had it), to load and to warm up, and when it turned ready. The
// runtime measures it, exports it as Prometheus histograms, serves it on
// GET /coldstart and writes it once to its log; the scheduler reads that log
// line back (FindInLog) to show each replica's breakdown in `nlpswarm status`.
// A leaf: it knows nothing of models, Docker or Postgres.
package coldstart

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProcessStart is when this process started (package initialisation, a few
// milliseconds after exec).
var ProcessStart = time.Now()

// Report is one runtime's cold start.
type Report struct {
	Model         string    `json:"model"`
	Digest        string    `json:"digest,omitempty"`
	Started       time.Time `json:"started"`        // process start
	FetchSeconds  float64   `json:"fetch_seconds"`  // artifact download, digest check and unpack, or cache hit
	ArtifactBytes int64     `json:"artifact_bytes"` // downloaded (0 on a cache hit)
	Cached        bool      `json:"artifact_cached"`
	LoadSeconds   float64   `json:"load_seconds"`   // model and tokenizer loaded
	WarmupSeconds float64   `json:"warmup_seconds"` // first inference
	Ready         time.Time `json:"ready"`          // readiness on
}

// TotalSeconds is process start to ready.
func (r Report) TotalSeconds() float64 { return r.Ready.Sub(r.Started).Seconds() }

// LogMessage is the msg of the runtime's log line that carries the report
// under the key LogKey.
const (
	LogMessage = "cold start"
	LogKey     = "coldstart"
)

// Log writes r as the runtime's one cold-start line.
func Log(log *slog.Logger, r Report) {
	log.Info(LogMessage, LogKey, r, "total_seconds", r.TotalSeconds())
}

// FindInLog returns the report of the first cold-start line in a runtime's
// JSON log.
func FindInLog(r io.Reader) (Report, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg    string  `json:"msg"`
			Report *Report `json:"coldstart"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == LogMessage && line.Report != nil {
			return *line.Report, true
		}
	}
	return Report{}, false
}

// Metrics are the cold-start figures a runtime exports.
type Metrics struct {
	phase      *prometheus.HistogramVec
	downloaded prometheus.Counter
	cacheHits  prometheus.Counter
}

// NewMetrics registers the cold-start metrics on reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_runtime_coldstart_phase_seconds",
			Help:    "Cold-start phases of the runtime: fetch (artifact), load, warmup, total (process start to ready).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"phase"}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "nlpswarm_runtime_artifact_downloaded_bytes_total",
			Help: "Artifact bytes downloaded at start (0 when the node's artifact cache had the digest)."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "nlpswarm_runtime_artifact_cache_hits_total",
			Help: "Starts served by the node's artifact cache."}),
	}
	if reg != nil {
		reg.MustRegister(m.phase, m.downloaded, m.cacheHits)
	}
	return m
}

// Observe records r.
func (m *Metrics) Observe(r Report) {
	m.phase.WithLabelValues("fetch").Observe(r.FetchSeconds)
	m.phase.WithLabelValues("load").Observe(r.LoadSeconds)
	m.phase.WithLabelValues("warmup").Observe(r.WarmupSeconds)
	m.phase.WithLabelValues("total").Observe(r.TotalSeconds())
	m.downloaded.Add(float64(r.ArtifactBytes))
	if r.Cached {
		m.cacheHits.Inc()
	}
}
