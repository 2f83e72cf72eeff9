package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/jobqueue"
	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/jobs"
)

// gatewayJobs is the gateway's part of the asynchronous jobs: the queue,
// its settings, the uploads in progress, and the worker and webhook sender
// (package jobs) that this gateway runs, unless --nojobworker.
type gatewayJobs struct {
	cfg      JobsConfig
	store    *jobqueue.Store
	uploads  chan struct{} // uploads in progress (JobUploads)
	inflight atomic.Int64  // job calls to the replicas in progress
	// foreground sends job batches as interactive requests (PathPredict):
	// BenchmarkJobInterference's "no lane" mode, the runtime as before its
	// background lane
	foreground atomic.Bool
	worker     *jobs.Worker
	webhooks   *jobs.Webhooks
}

// startJobs sets up the jobs of g and, unless --nojobworker, starts its
// worker and webhook sender until ctx ends (Close waits for them).
func (g *Gateway) startJobs(ctx context.Context, db *pgxpool.Pool) error {
	cfg, err := g.opts.JobsConfig.settle(g.opts)
	if err != nil {
		return err
	}
	gj := &gatewayJobs{cfg: cfg, store: &jobqueue.Store{DB: db}, uploads: make(chan struct{}, cfg.JobUploads)}
	g.jobs = gj
	if cfg.NoJobWorker {
		return nil
	}
	gj.worker = jobs.NewWorker(jobs.Config{
		Name: g.opts.GatewayID, Workers: cfg.JobWorkers, Lease: cfg.JobLease, MaxAttempts: cfg.JobMaxAttempts,
		Busy: func() bool { return g.interactiveInflight() >= int64(cfg.JobPauseInflight) },
	}, gj.store, g.callJob, g.log)
	gj.worker.Texts = g.recordJobTexts
	gj.webhooks = jobs.NewWebhooks(jobs.WebhookConfig{
		Timeout: cfg.JobWebhookTimeout, MaxAttempts: cfg.JobWebhookRetries, AllowPrivate: cfg.JobWebhookPrivate,
	}, gj.store, g.log)
	g.done.Add(2)
	go func() { defer g.done.Done(); gj.worker.Run(ctx) }()
	go func() { defer g.done.Done(); gj.webhooks.Run(ctx) }()
	return nil
}

// interactiveInflight is the customer requests this gateway has in
// progress, its own job calls left out.
func (g *Gateway) interactiveInflight() int64 {
	var n int64
	g.fleet.each(func(_ string, s *modelState) { n += s.load.inflight.Load() })
	return n - g.jobs.inflight.Load()
}

// callJob is the job worker's call of a model: the interactive path's
// forward (balancer, call credential, retry on another replica, hold of a
// model at zero) and translation, one result per text.
func (g *Gateway) callJob(ctx context.Context, j *jobqueue.Job, texts []string) ([]json.RawMessage, error) {
	m, ok := g.catalog.Get(j.Model)
	if !ok || m.ID != j.ModelID {
		if !g.catalog.Loaded() {
			return nil, &jobs.CallError{Code: "unavailable", Message: "no model catalogue yet", Retryable: true}
		}
		return nil, &jobs.CallError{Code: "model_not_found", Message: fmt.Sprintf("model %q is no longer deployed", j.Model)}
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, runtimeapi.PathPredict, nil)
	if err != nil {
		return nil, err
	}
	r.Header["X-Request-Id"] = []string{newRequestID()}
	st := &reqState{r: r, start: time.Now(), model: m.Name}
	g.jobs.inflight.Add(1)
	// a job's texts go to the stable version only, never to a canary or a
	// shadow: one job's answers come from one version, and a canary's
	// figures are the interactive traffic's. The runtime runs them as
	// background work (runtimeapi.PathPredictBackground): after every
	// waiting interactive request, in small parts, never in one call with
	// interactive texts
	timeout := g.modelTimeout(m.Name)
	path := runtimeapi.PathPredictBackground
	if g.jobs.foreground.Load() {
		path = runtimeapi.PathPredict
	}
	res, aerr := g.forwardTo(ctx, r, requestID(r), m.Name, g.fleet.get(m.Name), m.Autoscaled, time.Now().Add(timeout), timeout, path, appendRuntimeRequest(nil, texts, j.Parameters), false, &st.upstream)
	g.jobs.inflight.Add(-1)
	if aerr != nil {
		return nil, &jobs.CallError{Code: aerr.code, Message: aerr.msg, Retryable: aerr.status >= 500 || aerr.status == http.StatusTooManyRequests || aerr.status == apierror.StatusClientClosed}
	}
	if res.status != http.StatusOK {
		msg := string(res.body)
		if len(msg) > 300 {
			msg = msg[:300]
		}
		if res.status >= 400 && res.status < 500 && res.status != http.StatusTooManyRequests {
			return nil, &jobs.CallError{Code: "model_rejected_input", Message: msg}
		}
		return nil, &jobs.CallError{Code: "upstream_error", Message: fmt.Sprintf("model runtime answered %d: %s", res.status, msg), Retryable: true}
	}
	answers, err := translateAll(m.Task, res.body, texts)
	if err != nil {
		return nil, &jobs.CallError{Code: "upstream_error", Message: "the model runtime gave a malformed answer", Retryable: true}
	}
	out := make([]json.RawMessage, len(answers))
	for i, a := range answers {
		out[i] = appendAnswer(nil, a)
	}
	return out, nil
}

// recordJobTexts meters a completion's texts as usage: each text one
// request (the unit of the monthly quota, which the job was charged with
// at acceptance), failed ones as errors.
func (g *Gateway) recordJobTexts(j *jobqueue.Job, done, failed int) {
	n := int64(done + failed)
	if n == 0 {
		return
	}
	uk := usageKey{key: j.KeyID, account: j.AccountID, model: j.ModelID, modelName: j.Model, day: g.usage.now().UTC().Format(time.DateOnly)}
	g.usage.count(uk, usageCount{requests: n, texts: n, errors: int64(failed)})
}

// chargeTexts counts n more against k's monthly quota (a job's texts
// beyond the request that Allow counted), refusing when they would pass
// it. Like Allow, it only counts for keys with a plan.
func (l *Limiter) chargeTexts(k *Key, n int64) bool {
	if l == nil || k.RPS <= 0 || k.Quota <= 0 || n <= 0 {
		return true
	}
	now := l.now()
	st := l.state(k, now)
	defer st.mu.Unlock()
	if month := limitkeys.Month(now.UTC()); st.month != month {
		st.month, st.used, st.qPending, st.qFlight = month, -1, 0, 0
	}
	if st.used >= 0 && st.used+st.qFlight+st.qPending+n > k.Quota {
		return false
	}
	st.qPending += n
	return true
}
