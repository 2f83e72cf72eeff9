package models

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Predictor runs a pipeline on a batch of texts.
type Predictor interface {
	Predict(ctx context.Context, texts []string, p Params) ([]any, error)
}

// ErrQueueFull is returned when the bounded queue has no room (→ 429
// overloaded, runtimeapi).
var ErrQueueFull = errors.New("queue full")

// BatchConfig tunes dynamic batching.
type BatchConfig struct {
	MaxSize   int           `description:"most texts gathered into one pipeline call (1 turns batching off)"`
	MaxTokens int           `description:"most tokens gathered into one pipeline call (0: no limit); a request with more runs alone"`
	MaxDelay  time.Duration `description:"longest wait for more requests before a pipeline call"`
	Queue     int           `description:"requests waiting at most; beyond it 429 overloaded with Retry-After"`
}

// backgroundQuiet is how long after a background part the batcher still
// counts background work as flowing (the gateway's next job batch is on its
// way) and so runs interactive batches without the MaxDelay window.
const backgroundQuiet = 100 * time.Millisecond

// DefaultBatchConfig: 32 texts, 4096 tokens (32 texts of 128) or 5 ms.
func DefaultBatchConfig() BatchConfig {
	return BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: 5 * time.Millisecond, Queue: 256}
}

type result struct {
	out []any
	err error
}

type job struct {
	ctx    context.Context
	texts  []string
	tokens int // what the model is given for texts (0: not counted)
	params Params
	done   chan result
}

// Batcher gathers concurrent requests into pipeline calls. One goroutine
// (Run) calls the predictor, so the model is never used concurrently.
//
// A request larger than one batch (more than MaxSize texts or MaxTokens
// tokens) is not run in one go, which would hold the loop for all of it
// while small requests wait: it is cut into parts of an eighth of the
// budget (plan), and each batch takes at most one part of it, then fills
// the rest of its budget from the queue. A small request arriving meanwhile
// joins the next batch instead of waiting for the whole large one.
//
// Background requests (SubmitBackground: a job's texts) are always cut
// into such parts, and a part runs alone, only when no interactive
// request (small or large) waits: interactive texts never share a pipeline
// call with background ones, and an interactive request arriving while a
// part runs waits for that part only. Under interactive load that never
// lets up, background work waits (its caller's deadline ends it; the job
// worker tries again later).
type Batcher struct {
	p          Predictor
	cfg        BatchConfig
	queue      chan *job
	large      chan []*job // the parts of requests larger than one batch
	background chan []*job // the parts of background requests
	metrics    *Metrics
}

// NewBatcher returns a batcher; call Run to start it.
func NewBatcher(p Predictor, cfg BatchConfig, m *Metrics) *Batcher {
	if cfg.MaxSize < 1 {
		cfg.MaxSize = 1
	}
	if cfg.Queue < 1 {
		cfg.Queue = 1
	}
	return &Batcher{p: p, cfg: cfg, queue: make(chan *job, cfg.Queue), large: make(chan []*job, cfg.Queue),
		background: make(chan []*job, cfg.Queue), metrics: m}
}

// Submit queues texts and waits for their outputs.
func (b *Batcher) Submit(ctx context.Context, texts []string, p Params) ([]any, error) {
	return b.SubmitCounted(ctx, texts, nil, p)
}

// plan cuts a request of texts with per-text token counts tokens (nil: not
// counted) into parts: one part ([start, end)) when it fits one batch's
// budget, else parts of at most 1/partsPerBatch of MaxSize texts and of
// MaxTokens tokens (a text larger than that is a part alone). A pure
// decision.
func plan(tokens []int, n int, cfg BatchConfig) [][2]int {
	sum := 0
	for _, t := range tokens {
		sum += t
	}
	if n <= cfg.MaxSize && (cfg.MaxTokens <= 0 || sum <= cfg.MaxTokens) {
		return [][2]int{{0, n}}
	}
	return planParts(tokens, n, cfg)
}

// planParts cuts a request into parts of at most 1/partsPerBatch of
// MaxSize texts and of MaxTokens tokens, whatever its size (background
// requests; plan for the large interactive ones).
func planParts(tokens []int, n int, cfg BatchConfig) [][2]int {
	maxTexts, maxTok := max(1, cfg.MaxSize/partsPerBatch), cfg.MaxTokens/partsPerBatch
	var out [][2]int
	start, tok := 0, 0
	for i := range n {
		t := 0
		if tokens != nil {
			t = tokens[i]
		}
		if i > start && (i-start >= maxTexts || (maxTok > 0 && tok+t > maxTok)) {
			out = append(out, [2]int{start, i})
			start, tok = i, 0
		}
		tok += t
	}
	return append(out, [2]int{start, n})
}

// partsPerBatch: a part of a large request is an eighth of a batch, so a
// small request beside it waits about an eighth of a full batch's time (on
// ORT and the sentiment fixture, 4 texts of 64 tokens: about what the small
// request costs itself), and the large request pays one call per part.
const partsPerBatch = 8

// SubmitCounted is Submit for texts the model is given tokens[i] tokens for
// (Preparer; nil: not counted), which the batches' token budget counts.
func (b *Batcher) SubmitCounted(ctx context.Context, texts []string, tokens []int, p Params) ([]any, error) {
	return b.submit(ctx, texts, tokens, p, false)
}

// SubmitBackground is SubmitCounted for work no one waits on interactively
// (a job's texts): it runs in parts, each alone, only while no interactive
// request waits (Batcher).
func (b *Batcher) SubmitBackground(ctx context.Context, texts []string, tokens []int, p Params) ([]any, error) {
	return b.submit(ctx, texts, tokens, p, true)
}

func (b *Batcher) submit(ctx context.Context, texts []string, tokens []int, p Params, background bool) ([]any, error) {
	var parts [][2]int
	if background {
		parts = planParts(tokens, len(texts), b.cfg)
	} else {
		parts = plan(tokens, len(texts), b.cfg)
	}
	// the parts stop (run skips them) once this request has its answer
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make([]*job, len(parts))
	for i, pt := range parts {
		j := &job{ctx: ctx, texts: texts[pt[0]:pt[1]], params: p, done: make(chan result, 1)}
		if tokens != nil { // nil: not counted
			for _, t := range tokens[pt[0]:pt[1]] {
				j.tokens += t
			}
		}
		jobs[i] = j
	}
	if background {
		select {
		case b.background <- jobs:
		default:
			return nil, ErrQueueFull
		}
	} else if len(jobs) == 1 {
		select {
		case b.queue <- jobs[0]:
		default:
			return nil, ErrQueueFull
		}
	} else {
		select {
		case b.large <- jobs:
		default:
			return nil, ErrQueueFull
		}
	}
	b.setQueueDepth()
	out := make([]any, 0, len(texts))
	for _, j := range jobs {
		select {
		case r := <-j.done:
			if r.err != nil {
				return nil, r.err
			}
			out = append(out, r.out...)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// Predictor is what the batcher runs: a Model, or a test's stand-in.
func (b *Batcher) Predictor() Predictor { return b.p }

// fits tells whether a batch of tokens tokens has room for a job of more:
// the token budget is checked only once the batch holds something, so a job
// larger than the budget runs alone (Model.Predict splits it into calls).
func (b *Batcher) fits(tokens, more int) bool {
	return b.cfg.MaxTokens <= 0 || tokens == 0 || tokens+more <= b.cfg.MaxTokens
}

// Run processes the queue until ctx ends.
func (b *Batcher) Run(ctx context.Context) {
	lastJobs := 0
	var lastBackground time.Time // when the last background part ran
	var held *job                // received, but over the last batch's token budget
	var parts []*job             // the parts left of the large request being run
	var low []*job               // the parts left of the background request being run
	for {
		var batch []*job
		n, tok := 0, 0
		// add j, or hold it for the next batch when the tokens do not fit
		add := func(j *job) bool {
			if len(batch) > 0 && !b.fits(tok, j.tokens) {
				held = j
				return false
			}
			batch = append(batch, j)
			n += len(j.texts)
			tok += j.tokens
			return true
		}
		if len(parts) == 0 {
			select {
			case parts = <-b.large:
			default:
			}
		}
		if len(parts) > 0 {
			add(parts[0])
			parts = parts[1:]
		}
		if h := held; h != nil {
			held = nil
			add(h)
		}
		if len(batch) == 0 {
			// interactive first; a background part only when none waits,
			// alone (not gathered with anything)
			select {
			case j := <-b.queue:
				add(j)
			case parts = <-b.large: // (interactive too)
				continue
			default:
				if ctx.Err() != nil {
					return
				}
				if len(low) == 0 {
					select {
					case low = <-b.background:
					default:
					}
				}
				if len(low) > 0 {
					j := low[0]
					low = low[1:]
					b.setQueueDepth()
					lastJobs = 1
					b.run([]*job{j})
					lastBackground = time.Now()
					continue
				}
				select {
				case <-ctx.Done():
					return
				case j := <-b.queue:
					add(j)
				case parts = <-b.large:
					continue
				case low = <-b.background:
					continue
				}
			}
		}
		// take what is already queued without waiting
	drain:
		for n < b.cfg.MaxSize && held == nil {
			select {
			case j := <-b.queue:
				add(j)
			default:
				break drain
			}
		}
		// wait for company only under load (the last batch had company): a
		// lone request on an idle runtime runs at once, so batching costs
		// nothing at concurrency 1. Never while background work flows (it
		// waits, or a part ran within backgroundQuiet: its caller sends the
		// next one): the model would idle through the window that a part
		// could use, and interactive requests held behind a part arrive
		// together (company) only because of it
		if b.cfg.MaxSize > 1 && b.cfg.MaxDelay > 0 && (len(batch) > 1 || lastJobs > 1) && n < b.cfg.MaxSize && held == nil &&
			len(low) == 0 && len(b.background) == 0 && time.Since(lastBackground) > backgroundQuiet {
			timer := time.NewTimer(b.cfg.MaxDelay)
		gather:
			for n < b.cfg.MaxSize {
				select {
				case j := <-b.queue:
					if !add(j) {
						break gather
					}
				case <-timer.C:
					break gather
				}
			}
			timer.Stop()
		}
		b.setQueueDepth()
		lastJobs = len(batch)
		b.run(batch)
	}
}

func (b *Batcher) setQueueDepth() {
	b.metrics.queueDepth.Set(float64(len(b.queue) + len(b.large) + len(b.background)))
}

// run calls the pipeline once per parameter group; if a group's call fails,
// each of its requests is retried alone, so one bad text fails only its own
// request.
func (b *Batcher) run(batch []*job) {
	groups := map[string][]*job{}
	var order []string
	for _, j := range batch {
		if j.ctx.Err() != nil {
			j.done <- result{err: j.ctx.Err()}
			continue
		}
		k := j.params.key()
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], j)
	}
	for _, k := range order {
		jobs := groups[k]
		var texts []string
		for _, j := range jobs {
			texts = append(texts, j.texts...)
		}
		b.metrics.batchSize.Observe(float64(len(texts)))
		ctx, stop := whileWaited(jobs)
		out, err := b.call(ctx, jobs[0].params, texts)
		stop()
		if err == nil && len(out) == len(texts) {
			off := 0
			for _, j := range jobs {
				j.done <- result{out: out[off : off+len(j.texts)]}
				off += len(j.texts)
			}
			continue
		}
		for _, j := range jobs {
			if len(jobs) == 1 {
				j.done <- result{err: err}
				break
			}
			o, err := b.call(j.ctx, j.params, j.texts)
			j.done <- result{out: o, err: err}
		}
	}
}

// call runs the predictor and turns a panic into an error.
func (b *Batcher) call(ctx context.Context, p Params, texts []string) (out []any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("inference failed")
		}
	}()
	return b.p.Predict(ctx, texts, p)
}

// whileWaited is a context that ends once every job's client has gone
// (its request context ended), so a long pipeline call stops between
// chunks (Model.Predict) when nobody waits for it; stop releases it.
func whileWaited(jobs []*job) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int64
	left.Store(int64(len(jobs)))
	stops := make([]func() bool, 0, len(jobs))
	for _, j := range jobs {
		stops = append(stops, context.AfterFunc(j.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}

// Metrics of the runtime.
type Metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	batchSize  prometheus.Histogram
	queueDepth prometheus.Gauge
	loadTime   prometheus.Gauge
	info       *prometheus.GaugeVec
}

// NewMetrics registers the runtime's metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_runtime_requests_total", Help: "Inference requests by task and HTTP status."}, []string{"task", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_runtime_request_duration_seconds", Help: "Inference request latency.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"task", "status"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nlpswarm_runtime_batch_size", Help: "Texts per pipeline call.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nlpswarm_runtime_queue_depth", Help: "Requests waiting for the batcher."}),
		loadTime:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "nlpswarm_runtime_model_load_seconds", Help: "Time to load and warm the model."}),
		info:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_runtime_model_info", Help: "The model served (value 1)."}, []string{"model", "task", "digest"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.batchSize, m.queueDepth, m.loadTime, m.info)
	}
	return m
}

// Loaded records the load time and the model's identity.
func (m *Metrics) Loaded(name, task, digest string, d time.Duration) {
	m.loadTime.Set(d.Seconds())
	m.info.WithLabelValues(name, task, digest).Set(1)
}
