package generation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck"
)

// ModelFile is the file a generation model's archive holds.
const ModelFile = "model.gguf"

// Config is one replica's settings.
type Config struct {
	Name         string        `description:"model name (the id /v1/models lists)"`
	Server       string        `description:"llama-server's path"`
	Context      int           `description:"positions per slot; 0: the model's own context length"`
	Parallel     int           `description:"slots: sequences generated at once (continuous batching)"`
	Threads      int           `description:"CPU threads of the child; 0: GOMAXPROCS"`
	GPULayers    int           `description:"layers llama-server offloads to the GPUs it sees (--n-gpu-layers); 0: none, the CPU runs the model; a number above the model's layers (the scheduler gives 999) offloads all of them"`
	StartTimeout time.Duration `description:"how long the child may take to load the model"`
	DrainTimeout time.Duration `description:"how long a drain waits for requests in flight"`
	Embeddings   bool          `description:"serve /v1/embeddings only (an embedding GGUF, task feature-extraction): llama-server --embeddings with the model's own pooling"`
}

// DefaultConfig is 4 slots of the model's own context.
func DefaultConfig() Config {
	return Config{Server: "/usr/bin/llama-server", Parallel: 4, StartTimeout: 5 * time.Minute, DrainTimeout: 2 * time.Minute}
}

// Replica is a running llama-server child and the routes in front of it.
type Replica struct {
	cfg      Config
	info     ggufcheck.Info
	log      *slog.Logger
	metrics  *Metrics
	base     *url.URL
	proxy    *httputil.ReverseProxy
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the child has exited
	exitErr  error
	ready    atomic.Bool
	inflight sync.WaitGroup
	callCred string
}

// Start checks the model in dir and starts llama-server on it, on a
// loopback port of its own, returning once the child answers /health (or
// failing with the tail of its log).
func Start(ctx context.Context, cfg Config, dir string, log *slog.Logger, m *Metrics) (*Replica, error) {
	model := filepath.Join(dir, ModelFile)
	info, err := ggufcheck.Check(model, ggufcheck.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", cfg.Name, err)
	}
	slots, perSlot := slotsOf(cfg, info)
	threads := cfg.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args, err := serverArgs(cfg, info, model, port, threads)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", cfg.Name, err)
	}
	cmd := exec.Command(cfg.Server, args...)
	tail := &tailBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = tail, tail
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the role
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Server, err)
	}
	r := &Replica{cfg: cfg, info: info, log: log, metrics: m, cmd: cmd, exited: make(chan struct{}),
		base: &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}}
	go func() {
		r.exitErr = cmd.Wait()
		r.ready.Store(false)
		close(r.exited)
	}()
	log.Info("llama-server started", "pid", cmd.Process.Pid, "slots", slots, "context_per_slot", perSlot, "threads", threads, "gpu_layers", max(cfg.GPULayers, 0),
		"architecture", info.Architecture, "parameters", info.Parameters, "file_type", info.FileType)
	if err := r.waitHealthy(ctx, cfg.StartTimeout); err != nil {
		r.kill()
		return nil, fmt.Errorf("llama-server: %w; its log ends: %s", err, tail.String())
	}
	r.proxy = &httputil.ReverseProxy{
		// A connection per request: llama-server closes its connection a
		// moment after a streamed answer though the answer offered to keep
		// it, and a request sent on it at once read EOF (502; 65 of 600
		// requests, a stream then a chat, against 1:0.7.0+dfsg-2). A POST
		// is not sent again on a new connection, and a loopback connect
		// costs microseconds beside a generation.
		Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(r.base)
			pr.Out.Header.Del("Authorization")
		},
		FlushInterval: -1, // every write of an event stream reaches the client at once
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = newMeter(resp, r.metrics, cfg.Name, time.Now())
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if req.Context().Err() != nil {
				return // the client left; the child stops when its connection closes
			}
			r.log.Warn("llama-server did not answer", "err", err)
			apierror.Write(w, http.StatusBadGateway, "runtime_unavailable", "the model's server did not answer")
		},
	}
	r.ready.Store(true)
	return r, nil
}

// slotsOf is the child's slots and the positions of each: the configured
// context, at most the model's own.
func slotsOf(cfg Config, info ggufcheck.Info) (slots int, perSlot uint64) {
	perSlot = uint64(cfg.Context)
	if perSlot == 0 || perSlot > info.ContextLength {
		perSlot = info.ContextLength
	}
	return max(cfg.Parallel, 1), perSlot
}

// serverArgs is llama-server's command line for the model at path. In
// embeddings mode the child pools as the GGUF says (passed explicitly:
// llama.cpp reads pooling_type from the header for some architectures
// only) and takes a whole slot's context in one batch, since an input is
// embedded in one pass.
func serverArgs(cfg Config, info ggufcheck.Info, path string, port, threads int) ([]string, error) {
	slots, perSlot := slotsOf(cfg, info)
	args := []string{"-m", path, "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--parallel", strconv.Itoa(slots), "-c", strconv.FormatUint(perSlot*uint64(slots), 10),
		"-t", strconv.Itoa(threads), "--n-gpu-layers", strconv.Itoa(max(cfg.GPULayers, 0)), "--no-webui"}
	if cfg.Name != "" {
		// answers name the model as customers call it, not the replica's
		// cache path of its file (which they would otherwise read in "model")
		args = append(args, "--alias", cfg.Name)
	}
	if cfg.Embeddings {
		if !info.Embeds() {
			return nil, fmt.Errorf("embeddings mode needs a model that pools its tokens (%s.pooling_type mean, cls or last); this one has %q", info.Architecture, info.PoolingType)
		}
		batch := strconv.FormatUint(perSlot, 10)
		args = append(args, "--embeddings", "--pooling", info.PoolingType, "-b", batch, "-ub", batch)
	}
	return args, nil
}

// Info is the checked model's header.
func (r *Replica) Info() ggufcheck.Info { return r.info }

// Exited is closed when the child has exited; Err then says why.
func (r *Replica) Exited() <-chan struct{} { return r.exited }

// Err is the child's exit status once Exited is closed.
func (r *Replica) Err() error { return r.exitErr }

// SetCallCredential makes the /v1 routes require it (the gateway sends the
// model's call credential; issue 17).
func (r *Replica) SetCallCredential(c string) { r.callCred = c }

// Ready reports whether the replica takes new requests.
func (r *Replica) Ready() bool { return r.ready.Load() }

func (r *Replica) waitHealthy(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base.String()+"/health", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.exited:
			return fmt.Errorf("exited while loading (%v)", r.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %s", limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Drain stops taking requests, waits for those in flight (up to the
// drain timeout), then stops the child: SIGTERM, SIGKILL 10 s later.
func (r *Replica) Drain() {
	r.ready.Store(false)
	done := make(chan struct{})
	go func() { r.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.cfg.DrainTimeout):
		r.log.Warn("drain timed out with requests in flight", "timeout", r.cfg.DrainTimeout)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.kill()
	}
}

func (r *Replica) kill() {
	r.cmd.Process.Kill()
	<-r.exited
}

// The relayed routes of each mode: a replica runs a generation model or an
// embedding model (Config.Embeddings), and answers the other mode's routes
// with a 400 that says which it serves.
var (
	generationRoutes = []string{"/v1/chat/completions", "/v1/completions"}
	embeddingRoutes  = []string{"/v1/embeddings"}
)

// Handler serves /v1/chat/completions and /v1/completions (or, in
// embeddings mode, /v1/embeddings) relayed, /v1/models (this model) and
// the OIP health routes.
func (r *Replica) Handler() http.Handler {
	mux := http.NewServeMux()
	relay := http.HandlerFunc(r.relay)
	served, other := generationRoutes, embeddingRoutes
	if r.cfg.Embeddings {
		served, other = embeddingRoutes, generationRoutes
	}
	for _, p := range served {
		mux.Handle("POST "+p, relay)
	}
	for _, p := range other {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, req *http.Request) {
			if r.authorised(w, req) {
				apierror.Write(w, http.StatusBadRequest, "wrong_task", fmt.Sprintf("model %s does not serve %s (it serves %s)", r.cfg.Name, p, strings.Join(served, ", ")))
			}
		})
	}
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, req *http.Request) {
		if !r.authorised(w, req) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": []map[string]any{{"id": r.cfg.Name, "object": "model", "owned_by": "nlpswarm"}}})
	})
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-r.exited:
			apierror.Write(w, http.StatusServiceUnavailable, "runtime_exited", "the model's server exited")
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	mux.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !r.Ready() {
			apierror.Write(w, http.StatusServiceUnavailable, "not_ready", "the model is loading, draining or its server exited")
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

// maxRequestBytes bounds a request body: a chat with a long history is
// tens of KiB; 4 MiB leaves room for a context of 1M positions of text.
const maxRequestBytes = 4 << 20

func (r *Replica) relay(w http.ResponseWriter, req *http.Request) {
	if !r.authorised(w, req) {
		return
	}
	if !r.Ready() {
		apierror.Write(w, http.StatusServiceUnavailable, "not_ready", "the replica is draining or its model server exited")
		return
	}
	r.inflight.Add(1)
	defer r.inflight.Done()
	r.metrics.inflight.WithLabelValues(r.cfg.Name).Inc()
	defer r.metrics.inflight.WithLabelValues(r.cfg.Name).Dec()
	req.Body = http.MaxBytesReader(w, req.Body, maxRequestBytes)
	r.proxy.ServeHTTP(w, req)
}

func (r *Replica) authorised(w http.ResponseWriter, req *http.Request) bool {
	if r.callCred == "" || bearer.Valid(req, r.callCred) {
		return true
	}
	bearer.Refuse(w, "this model's call credential")
	return false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("a loopback port for llama-server: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes of the child's log.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b[max(0, len(t.b)-2000):]))
}

// Metrics are the generation runtime's series.
type Metrics struct {
	tokens   *prometheus.CounterVec
	ttft     *prometheus.HistogramVec
	requests *prometheus.CounterVec
	inflight *prometheus.GaugeVec
}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_generation_tokens_total",
			Help: "Tokens read (prompt) and generated (completion), from the model server's usage."}, []string{"model", "kind"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nlpswarm_generation_time_to_first_token_seconds",
			Help:    "From the request to the first streamed event (streams) or the prompt's evaluation time (whole answers).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"model"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nlpswarm_generation_requests_total",
			Help: "Requests relayed to the model server, by status code."}, []string{"model", "code"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_generation_inflight",
			Help: "Requests being generated now (slots busy or queued)."}, []string{"model"}),
	}
	reg.MustRegister(m.tokens, m.ttft, m.requests, m.inflight)
	return m
}

// meter reads the model server's answer as it passes: the first event's
// time of a stream, and the usage object (whole answers, or a stream's last
// event) for the token counters.
type meter struct {
	io.ReadCloser
	m       *Metrics
	model   string
	start   time.Time
	stream  bool
	first   bool
	line    []byte // a stream's partial line
	whole   bytes.Buffer
	counted bool
}

// maxMeteredAnswer bounds what is kept of a whole answer to read its usage.
const maxMeteredAnswer = 1 << 20

func newMeter(resp *http.Response, m *Metrics, model string, start time.Time) io.ReadCloser {
	m.requests.WithLabelValues(model, strconv.Itoa(resp.StatusCode)).Inc()
	return &meter{ReadCloser: resp.Body, m: m, model: model, start: start,
		stream: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}
}

func (mt *meter) Read(p []byte) (int, error) {
	n, err := mt.ReadCloser.Read(p)
	if n > 0 {
		mt.observe(p[:n])
	}
	if errors.Is(err, io.EOF) && !mt.stream {
		mt.usage(mt.whole.Bytes())
	}
	return n, err
}

func (mt *meter) observe(b []byte) {
	if !mt.stream {
		if mt.whole.Len()+len(b) <= maxMeteredAnswer {
			mt.whole.Write(b)
		}
		return
	}
	mt.line = append(mt.line, b...)
	for {
		i := bytes.IndexByte(mt.line, '\n')
		if i < 0 {
			if len(mt.line) > maxMeteredAnswer {
				mt.line = mt.line[:0]
			}
			return
		}
		ev, ok := bytes.CutPrefix(bytes.TrimSpace(mt.line[:i]), []byte("data:"))
		mt.line = mt.line[i+1:]
		if !ok {
			continue
		}
		if !mt.first {
			mt.first = true
			mt.m.ttft.WithLabelValues(mt.model).Observe(time.Since(mt.start).Seconds())
		}
		if bytes.Contains(ev, []byte(`"usage"`)) {
			mt.usage(bytes.TrimSpace(ev))
		}
	}
}

// usage counts the tokens of an answer or a stream's last event once.
func (mt *meter) usage(b []byte) {
	var a struct {
		Usage *struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
		} `json:"usage"`
		Timings *struct {
			PromptMS float64 `json:"prompt_ms"`
		} `json:"timings"`
	}
	if mt.counted || json.Unmarshal(b, &a) != nil || a.Usage == nil {
		return
	}
	mt.counted = true
	mt.m.tokens.WithLabelValues(mt.model, "prompt").Add(float64(max(a.Usage.Prompt, 0)))
	mt.m.tokens.WithLabelValues(mt.model, "completion").Add(float64(max(a.Usage.Completion, 0)))
	if !mt.stream && a.Timings != nil && a.Timings.PromptMS >= 0 {
		mt.m.ttft.WithLabelValues(mt.model).Observe(a.Timings.PromptMS / 1000)
	}
}
