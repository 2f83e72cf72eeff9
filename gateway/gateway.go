// Package gateway is the customer API: API keys, rate limits and quotas,
// replica discovery, load balancing, retries, timeouts, metrics and usage
// metering in front of the model runtimes. For autoscaling it publishes each
// model's load to Redis and holds requests for a model at zero while a
// replica starts (autoscale.go).
//
// Redis failures fail open: rate limits and quotas are skipped for the
// request, nlpswarm_gateway_ratelimit_failopen_total counts it and a warning
// is logged (at most once every 10 s), so that Redis going down does not take
// the customer API down with it.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Options tune the gateway. Zero values take the defaults of DefaultOptions.
type Options struct {
	Timeout           time.Duration            // per request, upstream attempts included
	ModelTimeouts     map[string]time.Duration // per model overrides
	MaxBodyBytes      int64
	MaxTexts          int
	CatalogRefresh    time.Duration
	DiscoveryInterval time.Duration
	KeyCacheTTL       time.Duration // at most 2 s, so that revocation bites within 5 s
	UsageFlush        time.Duration
	EjectAfter        int // consecutive failures that eject a replica
	ProbeInterval     time.Duration
	IdleConnTimeout   time.Duration // upstream keep-alive; well under Swarm's 900 s IPVS drop
	// DeadReplicaTimeout: a replica silent this long (its node gone, no
	// reset) fails the attempt, which is retried on another replica.
	DeadReplicaTimeout time.Duration
	RedisPrefix        string
	// LimitSync is how often the requests admitted against the local rate
	// limit buckets are settled with Redis (limit.go).
	LimitSync time.Duration
	// Autoscaling (autoscale.go): load figures for the scheduler, and the
	// hold of requests for a model at zero.
	GatewayID      string        // names this gateway's load figures in Redis (hostname-random by default)
	LoadReport     time.Duration // how often load figures go to Redis (they expire after 3 periods)
	HoldMax        int           // requests held per model at zero; beyond, 503 + Retry-After
	HoldRetryAfter time.Duration // Retry-After of a refused or timed-out held request
	HoldPoll       time.Duration // how often a model's replicas are looked up while requests are held
	WakeResend     time.Duration // a held model's wake-up is sent again after this long without a replica
	WakeCoalesce   time.Duration // how long a wake-up waits at most for the rest of a burst (it goes 50 ms after the last arrival), to carry its size
}

// DefaultOptions are the defaults the gateway role starts from.
func DefaultOptions() Options {
	return Options{
		Timeout: 30 * time.Second, MaxBodyBytes: 1 << 20, MaxTexts: 64,
		CatalogRefresh: 3 * time.Second, DiscoveryInterval: time.Second, KeyCacheTTL: 2 * time.Second,
		UsageFlush: 10 * time.Second, EjectAfter: 3, ProbeInterval: time.Second,
		IdleConnTimeout: 60 * time.Second, DeadReplicaTimeout: 5 * time.Second, RedisPrefix: "nlpswarm:",
		LoadReport: time.Second, HoldMax: 100, HoldRetryAfter: 3 * time.Second, HoldPoll: 150 * time.Millisecond,
		WakeResend: 5 * time.Second, WakeCoalesce: 300 * time.Millisecond, LimitSync: DefaultLimitSync,
	}
}

// Deps are what the gateway talks to.
type Deps struct {
	DB        *pgxpool.Pool
	Redis     *redis.Client // optional: no rate limits nor quotas without it
	Discovery Discoverer
	Policy    Policy // LeastOutstanding when nil
	Log       *slog.Logger
	Registry  prometheus.Registerer // optional
}

// Gateway is an http.Handler serving the customer API.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	catalog *Catalog
	keys    *KeyStore
	limiter *Limiter
	usage   *Usage
	disc    Discoverer
	policy  Policy
	client  *http.Client // health probes
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	m       *metrics
	mux     *http.ServeMux

	pools     sync.Map // model name -> *Pool
	loads     sync.Map // model name -> *modelLoad
	rdb       *redis.Client
	rediscov  chan struct{}
	recatalog chan struct{}
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closed    atomic.Bool
	lastWarn  atomic.Int64
}

// New loads the catalogue once and starts the background loops (catalogue,
// discovery, usage flush); Close stops them and flushes usage.
func New(ctx context.Context, opts Options, deps Deps) (*Gateway, error) {
	d := DefaultOptions()
	orDefault(&opts.Timeout, d.Timeout)
	orDefault(&opts.MaxBodyBytes, d.MaxBodyBytes)
	orDefault(&opts.MaxTexts, d.MaxTexts)
	orDefault(&opts.CatalogRefresh, d.CatalogRefresh)
	orDefault(&opts.DiscoveryInterval, d.DiscoveryInterval)
	if opts.KeyCacheTTL > 2*time.Second {
		opts.KeyCacheTTL = d.KeyCacheTTL
	}
	orDefault(&opts.KeyCacheTTL, d.KeyCacheTTL)
	orDefault(&opts.UsageFlush, d.UsageFlush)
	orDefault(&opts.EjectAfter, d.EjectAfter)
	orDefault(&opts.ProbeInterval, d.ProbeInterval)
	orDefault(&opts.IdleConnTimeout, d.IdleConnTimeout)
	orDefault(&opts.DeadReplicaTimeout, d.DeadReplicaTimeout)
	if opts.GatewayID == "" {
		opts.GatewayID = defaultGatewayID()
	}
	orDefault(&opts.LoadReport, d.LoadReport)
	orDefault(&opts.HoldMax, d.HoldMax)
	orDefault(&opts.HoldRetryAfter, d.HoldRetryAfter)
	orDefault(&opts.HoldPoll, d.HoldPoll)
	orDefault(&opts.WakeResend, d.WakeResend)
	orDefault(&opts.WakeCoalesce, d.WakeCoalesce)
	orDefault(&opts.LimitSync, d.LimitSync)
	if deps.DB == nil || deps.Discovery == nil {
		return nil, errors.New("gateway: DB and Discovery are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Policy == nil {
		deps.Policy = LeastOutstanding{}
	}
	dial := upstreamDialer(opts.DeadReplicaTimeout).DialContext
	tr := &http.Transport{ // health probes; requests go through each upstream's connPool
		DialContext:         dial,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     opts.IdleConnTimeout,
		DisableCompression:  true,
	}
	g := &Gateway{
		opts: opts, log: deps.Log, catalog: newCatalog(deps.DB), keys: newKeyStore(deps.DB, opts.KeyCacheTTL, deps.Redis, opts.RedisPrefix),
		limiter: newLimiter(deps.Redis, opts.RedisPrefix, opts.LimitSync), usage: newUsage(deps.DB), disc: deps.Discovery,
		policy: deps.Policy, client: &http.Client{Transport: tr}, dial: dial, m: newMetrics(deps.Registry),
		rediscov: make(chan struct{}, 1), recatalog: make(chan struct{}, 1), rdb: deps.Redis,
	}
	g.mux = http.NewServeMux()
	// (ServeHTTP takes the usual forms of these two routes without the mux)
	g.mux.HandleFunc("POST /v1/{model}/{task}", func(w http.ResponseWriter, r *http.Request) {
		g.serveTask(w, r, r.PathValue("model"), r.PathValue("task"))
	})
	g.mux.HandleFunc("POST /v2/models/{model}/infer", func(w http.ResponseWriter, r *http.Request) {
		g.serveInfer(w, r, r.PathValue("model"))
	})
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	})
	if err := g.catalog.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("gateway: load model catalogue: %w", err)
	}
	g.discoverAll(ctx)
	lctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.done.Add(5)
	go func() { defer g.done.Done(); g.limiter.Run(lctx) }()
	go g.loopCatalog(lctx)
	go g.loopUsage(lctx)
	go g.loopLoad(lctx)
	go g.listenDeployments(lctx, deps.DB)
	return g, nil
}

// orDefault replaces a zero or negative option with its default.
func orDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Close stops the loops and flushes usage to Postgres.
func (g *Gateway) Close(ctx context.Context) error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	g.cancel()
	g.done.Wait()
	g.client.CloseIdleConnections()
	g.pools.Range(func(_, p any) bool {
		for _, u := range p.(*Pool).Upstreams() {
			if c := u.conns.Load(); c != nil {
				c.closeIdle()
			}
		}
		return true
	})
	if err := g.limiter.Settle(ctx); err != nil {
		g.log.Warn("rate limit settlement at shutdown failed", "err", err)
	}
	return g.FlushUsage(ctx)
}

// FlushUsage writes the usage gathered so far.
func (g *Gateway) FlushUsage(ctx context.Context) error {
	err := g.usage.Flush(ctx)
	if err != nil {
		g.m.usageFlush.WithLabelValues("error").Inc()
		g.log.Warn("usage flush failed", "err", err)
	} else {
		g.m.usageFlush.WithLabelValues("ok").Inc()
	}
	return err
}

func (g *Gateway) loopCatalog(ctx context.Context) {
	defer g.done.Done()
	ct := time.NewTicker(g.opts.CatalogRefresh)
	dt := time.NewTicker(g.opts.DiscoveryInterval)
	defer ct.Stop()
	defer dt.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ct.C:
			if err := g.catalog.Refresh(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("model catalogue refresh failed; keeping the previous one", "err", err)
			}
		case <-g.recatalog:
			if err := g.catalog.Refresh(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("model catalogue refresh failed; keeping the previous one", "err", err)
			}
		case <-dt.C:
		case <-g.rediscov:
		}
		g.discoverAll(ctx)
	}
}

// listenDeployments reloads the catalogue as soon as the apiserver signals a
// deployment change (LISTEN/NOTIFY), on top of the periodic refresh.
func (g *Gateway) listenDeployments(ctx context.Context, db *pgxpool.Pool) {
	defer g.done.Done()
	for ctx.Err() == nil {
		err := func() error {
			conn, err := db.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "LISTEN "+pg.NotifyDeployments); err != nil {
				return err
			}
			defer func() { // leave the pooled connection clean
				uctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, _ = conn.Exec(uctx, "UNLISTEN *")
				cancel()
			}()
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					return err
				}
				select {
				case g.recatalog <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		g.log.Warn("listening for deployment changes failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func (g *Gateway) loopUsage(ctx context.Context) {
	defer g.done.Done()
	t := time.NewTicker(g.opts.UsageFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = g.FlushUsage(fctx)
			cancel()
		}
	}
}

// discoverAll refreshes the replica set of every deployed model.
func (g *Gateway) discoverAll(ctx context.Context) {
	names := g.catalog.Names()
	live := make(map[string]bool, len(names))
	for _, n := range names {
		live[n] = true
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addrs, err := g.disc.Lookup(lctx, n)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("discovery failed; keeping the previous replicas", "model", n, "err", err)
			}
			continue
		}
		p := g.pool(n)
		if p.Set(addrs) {
			g.log.Info("replicas changed", "model", n, "replicas", addrs)
		}
		g.m.replicas.WithLabelValues(n).Set(float64(len(addrs)))
	}
	g.pools.Range(func(k, _ any) bool {
		if !live[k.(string)] {
			g.pools.Delete(k)
			g.m.replicas.DeleteLabelValues(k.(string))
		}
		return true
	})
	g.loads.Range(func(k, _ any) bool {
		if !live[k.(string)] {
			g.loads.Delete(k)
		}
		return true
	})
}

func (g *Gateway) pool(model string) *Pool {
	if p, ok := g.pools.Load(model); ok {
		return p.(*Pool)
	}
	p, _ := g.pools.LoadOrStore(model, &Pool{})
	return p.(*Pool)
}

func (g *Gateway) triggerDiscovery() {
	select {
	case g.rediscov <- struct{}{}:
	default:
	}
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-ID")
	if !validRequestID(rid) {
		rid = newRequestID()
		r.Header["X-Request-Id"] = []string{rid}
	}
	// (hot path headers are set by their canonical key: Header.Set would
	// canonicalize, and allocate for "ID", on every request)
	w.Header()["X-Request-Id"] = []string{rid}
	if r.Method == http.MethodPost { // the two customer routes, without a ServeMux match
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/"); ok {
			if model, task, ok := strings.Cut(rest, "/"); ok && plainSegment(model) && plainSegment(task) {
				g.serveTask(w, r, model, task)
				return
			}
		} else if rest, ok := strings.CutPrefix(r.URL.Path, "/v2/models/"); ok {
			if model, ok := strings.CutSuffix(rest, "/infer"); ok && plainSegment(model) {
				g.serveInfer(w, r, model)
				return
			}
		}
	}
	g.mux.ServeHTTP(w, r) // everything else, with its cleaning, 404s and 405s
}

// plainSegment: one non-empty path segment that a ServeMux would match as
// it is (no "/", not "." or "..").
func plainSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}

var jsonContentType = []string{"application/json"}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// Request IDs are this process's random 64-bit prefix and a counter: as
// unique as 16 random bytes across gateways and restarts for any practical
// count, without a call to the system's random source on every request.
var (
	ridPrefix = func() string {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}()
	ridCounter atomic.Uint64
)

func newRequestID() string {
	var b [32]byte
	buf := append(b[:0], ridPrefix...)
	n := ridCounter.Add(1)
	for i := 60; i >= 0; i -= 4 { // fixed width: 16 hex digits
		buf = append(buf, hexDigits[(n>>uint(i))&0xf])
	}
	return string(buf)
}

// reqState carries one request through the handlers.
type reqState struct {
	r        *http.Request
	key      string // key prefix (never the key)
	start    time.Time
	model    string // for metrics: the routed model or "-"
	status   int
	upstream time.Duration
}

func (g *Gateway) finish(st *reqState) {
	d := time.Since(st.start)
	ms := g.m.forModel(st.model)
	if st.status == http.StatusOK {
		ms.ok.Inc()
	} else {
		g.m.requests.WithLabelValues(st.model, strconv.Itoa(st.status)).Inc()
	}
	ms.latency.Observe(d.Seconds())
	if st.upstream > 0 {
		ms.added.Observe((d - st.upstream).Seconds())
	}
	level := slog.LevelDebug
	if st.status >= 500 {
		level = slog.LevelWarn
	}
	if g.log.Enabled(st.r.Context(), level) {
		g.log.Log(st.r.Context(), level, "request", "request_id", st.r.Header.Get("X-Request-ID"),
			"method", st.r.Method, "path", st.r.URL.Path, "model", st.model, "key", st.key,
			"status", st.status, "duration_ms", float64(d.Microseconds())/1000, "upstream_ms", float64(st.upstream.Microseconds())/1000)
	}
}

func (g *Gateway) fail(w http.ResponseWriter, st *reqState, status int, code, msg string) {
	st.status = status
	apierror.Write(w, status, code, msg)
}

// admit authenticates the caller, resolves the model and applies the plan.
// It writes the error answer itself and returns ok=false.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, st *reqState, name string) (*Key, *Model, bool) {
	if len(r.Header.Values("Authorization")) > 1 {
		// which one would a proxy in front have checked? Neither is taken.
		g.fail(w, st, http.StatusBadRequest, "invalid_request", "more than one Authorization header")
		return nil, nil, false
	}
	tok := tokenFrom(r)
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Token realm="nlpswarm"`)
		g.fail(w, st, http.StatusUnauthorized, "unauthorized", "missing API key: send Authorization: Token <key>")
		return nil, nil, false
	}
	k, err := g.keys.Lookup(r.Context(), tok)
	if err != nil {
		if errors.Is(err, errNoKey) {
			w.Header().Set("WWW-Authenticate", `Token realm="nlpswarm"`)
			g.fail(w, st, http.StatusUnauthorized, "unauthorized", "invalid or revoked API key")
			return nil, nil, false
		}
		g.log.Error("key lookup failed", "request_id", r.Header.Get("X-Request-ID"), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot check the API key now; retry")
		return nil, nil, false
	}
	st.key = k.Prefix
	if k.Kind != "inference" && k.Kind != "admin" {
		g.fail(w, st, http.StatusForbidden, "forbidden", "this key may not call the inference API")
		return nil, nil, false
	}
	m, ok := g.catalog.Get(name)
	if !ok || (m.Private && m.Owner != k.AccountID) {
		g.fail(w, st, http.StatusNotFound, "model_not_found", fmt.Sprintf("no deployed model %q", name))
		return nil, nil, false
	}
	st.model = m.Name
	v := g.limiter.Allow(r.Context(), k)
	if v.FailOpen {
		g.m.failOpen.Inc()
		if now := time.Now().UnixNano(); now-g.lastWarn.Load() > int64(10*time.Second) {
			g.lastWarn.Store(now)
			g.log.Warn("redis unavailable: rate limits and quotas not applied (fail-open)", "err", v.Err)
		}
	}
	if v.Limit != "" {
		h := w.Header()
		h["X-Ratelimit-Limit"] = []string{v.Limit}
		h["X-Ratelimit-Remaining"] = []string{strconv.Itoa(max(v.Remaining, 0))}
		h["X-Ratelimit-Reset"] = []string{strconv.Itoa(int(math.Ceil(v.Reset.Seconds())))}
	}
	if !v.Allowed {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(v.RetryAfter.Seconds())))))
		msg := "rate limit exceeded"
		if v.Reason == "quota_exceeded" {
			msg = "monthly quota exhausted"
		}
		g.fail(w, st, http.StatusTooManyRequests, v.Reason, msg)
		return nil, nil, false
	}
	return k, m, true
}

// readBody reads the body into buf's storage when its length is known (a
// pooled buffer, not ReadAll's growing ones); the body is valid until buf
// goes back to the pool.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, st *reqState, buf *[]byte) ([]byte, bool) {
	var body []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= g.opts.MaxBodyBytes {
		if int64(cap(*buf)) < n {
			*buf = make([]byte, n)
		}
		*buf = (*buf)[:n]
		body = *buf
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		if errors.As(err, &mbe) {
			g.fail(w, st, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("body over %d bytes", g.opts.MaxBodyBytes))
		} else if errors.As(err, &ne) && ne.Timeout() {
			// a body trickled slower than the server's read timeout (slowloris)
			w.Header().Set("Connection", "close")
			g.fail(w, st, http.StatusRequestTimeout, "request_timeout", "the body did not arrive within the server's read timeout")
		} else {
			g.fail(w, st, http.StatusBadRequest, "invalid_request", "cannot read the body")
		}
		return nil, false
	}
	return body, true
}

func (g *Gateway) serveTask(w http.ResponseWriter, r *http.Request, model, taskName string) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	task, ok := taskRoutes[taskName]
	if !ok {
		g.fail(w, st, http.StatusNotFound, "not_found", fmt.Sprintf("no task %q: want sentiment, classification, entities or embeddings", taskName))
		return
	}
	k, m, ok := g.admit(w, r, st, model)
	if !ok {
		return
	}
	if m.Task != task {
		g.fail(w, st, http.StatusBadRequest, "task_not_supported", fmt.Sprintf("model %q does %s, not %s", m.Name, m.Task, taskName))
		return
	}
	bodyBuf, upBuf := getBuf(), getBuf()
	defer putBuf(bodyBuf)
	defer putBuf(upBuf)
	body, ok := g.readBody(w, r, st, bodyBuf)
	if !ok {
		return
	}
	texts, single, params, err := DecodeRequest(body, g.opts.MaxTexts) // (texts are copies: the body's buffer is reused below)
	if err != nil {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", err.Error())
		g.usage.Record(k.ID, m.ID, 0, true)
		return
	}
	up := appendRuntimeRequest(*upBuf, texts, params)
	*upBuf = up
	res, aerr := g.forward(r, m.Name, runtimeapi.PathPredict, up, st)
	if aerr != nil {
		g.writeErr(w, st, aerr)
		g.usage.Record(k.ID, m.ID, len(texts), true)
		return
	}
	if res.status != http.StatusOK {
		g.relayUpstreamError(w, st, res)
		g.usage.Record(k.ID, m.ID, len(texts), true)
		return
	}
	answers, err := translateAll(m.Task, res.body, texts)
	if err != nil {
		g.m.upErrors.WithLabelValues(m.Name, "bad_response").Inc()
		g.log.Warn("malformed runtime answer", "request_id", r.Header.Get("X-Request-ID"), "model", m.Name, "err", err)
		g.fail(w, st, http.StatusBadGateway, "upstream_error", "the model runtime gave a malformed answer")
		g.usage.Record(k.ID, m.ID, len(texts), true)
		return
	}
	*bodyBuf = appendAnswers((*bodyBuf)[:0], answers, single) // the body is no longer needed
	st.status = http.StatusOK
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(*bodyBuf)
	g.usage.Record(k.ID, m.ID, len(texts), false)
}

func (g *Gateway) serveInfer(w http.ResponseWriter, r *http.Request, model string) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, m, ok := g.admit(w, r, st, model)
	if !ok {
		return
	}
	bodyBuf := getBuf()
	defer putBuf(bodyBuf)
	body, ok := g.readBody(w, r, st, bodyBuf)
	if !ok {
		return
	}
	res, aerr := g.forward(r, m.Name, runtimeapi.InferPath(m.Name), body, st)
	if aerr != nil {
		g.writeErr(w, st, aerr)
		g.usage.Record(k.ID, m.ID, 0, true)
		return
	}
	st.status = res.status
	if res.contentType != "" {
		w.Header().Set("Content-Type", res.contentType)
	}
	w.WriteHeader(res.status)
	_, _ = w.Write(res.body)
	g.usage.Record(k.ID, m.ID, 0, res.status >= 400)
}

// relayUpstreamError answers for a runtime's non-200: its 4xx (bad input for
// the model) keep their status; 5xx become 502.
func (g *Gateway) relayUpstreamError(w http.ResponseWriter, st *reqState, res *upstreamResult) {
	msg := strings.TrimSpace(string(res.body))
	var ae apierror.Body
	if json.Unmarshal(res.body, &ae) == nil && ae.Error.Message != "" {
		msg = ae.Error.Message
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if res.status >= 400 && res.status < 500 {
		g.fail(w, st, res.status, "model_rejected_input", msg)
		return
	}
	g.fail(w, st, http.StatusBadGateway, "upstream_error", fmt.Sprintf("model runtime answered %d: %s", res.status, msg))
}

type gwError struct {
	status     int
	code, msg  string
	retryAfter int
}

func (g *Gateway) writeErr(w http.ResponseWriter, st *reqState, e *gwError) {
	if e.status == 499 { // client went away: nobody to answer
		st.status = 499
		return
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	g.fail(w, st, e.status, e.code, e.msg)
}

type upstreamResult struct {
	status      int
	contentType string
	body        []byte
}

const maxUpstreamBody = 64 << 20

// forward sends body to a replica of model, retrying once on another replica
// after a connection error, a 503 (not ready) or a 429 (busy), within the model's deadline. The request
// context (client disconnect) cancels the upstream call. An autoscaled model
// with no replica holds the request until one is ready (holdForReplica).
func (g *Gateway) forward(r *http.Request, model, path string, body []byte, st *reqState) (*upstreamResult, *gwError) {
	timeout := g.opts.Timeout
	if t, ok := g.opts.ModelTimeouts[model]; ok && t > 0 {
		timeout = t
	}
	ctx := r.Context() // ends when the client goes away
	deadline := time.Now().Add(timeout)
	rid := r.Header.Get("X-Request-ID")
	pool := g.pool(model)
	load, end := g.arrive(model)
	defer end()
	if len(pool.Upstreams()) == 0 {
		if m, ok := g.catalog.Get(model); ok && m.Autoscaled {
			hctx, cancel := context.WithDeadline(ctx, deadline)
			aerr := g.holdForReplica(hctx, ctx, model, load, pool)
			cancel()
			if aerr != nil {
				return nil, aerr
			}
		}
	}
	var tried *Upstream
	var last *gwError
	for attempt := 0; attempt < 2; attempt++ {
		u := g.policy.Select(candidates(pool.Upstreams(), tried), r)
		if u == nil {
			if last != nil {
				return nil, last
			}
			g.triggerDiscovery()
			return nil, &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", model), 1}
		}
		if attempt > 0 {
			g.m.retries.WithLabelValues(model).Inc()
		}
		res, err := g.try(ctx, deadline, u, model, path, body, rid, st)
		outcome := runtimeapi.Answered
		if err == nil {
			switch outcome = runtimeapi.Judge(res.status); outcome {
			case runtimeapi.Answered:
				u.markSuccess()
				return res, nil
			case runtimeapi.Faulty:
				g.failure(model, u, "status")
				return res, nil
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil, &gwError{status: 499}
		case !time.Now().Before(deadline):
			// (a dial timeout is DeadlineExceeded too, long before the
			// request's deadline: that is a replica gone, retried below)
			g.m.upErrors.WithLabelValues(model, "timeout").Inc()
			return nil, &gwError{http.StatusGatewayTimeout, "upstream_timeout", fmt.Sprintf("model %q did not answer within %s", model, timeout), 0}
		case err != nil:
			g.failure(model, u, "connect")
			g.triggerDiscovery()
			g.log.Warn("upstream failed", "request_id", rid, "model", model, "upstream", u.Addr, "err", err)
			last = &gwError{http.StatusBadGateway, "upstream_error", fmt.Sprintf("model %q: replica unreachable", model), 0}
		case outcome == runtimeapi.Busy:
			// a healthy replica with a full queue: another may take it, and
			// it never counts toward ejection
			g.m.upErrors.WithLabelValues(model, "busy").Inc()
			last = &gwError{http.StatusServiceUnavailable, runtimeapi.CodeOverloaded, fmt.Sprintf("model %q is busy; retry shortly", model), runtimeapi.RetryAfterSeconds}
		default: // runtimeapi.NotReady
			g.failure(model, u, "unavailable")
			last = &gwError{http.StatusServiceUnavailable, "no_replica", fmt.Sprintf("model %q has no ready replica; retry shortly", model), runtimeapi.RetryAfterSeconds}
		}
		tried = u
	}
	return nil, last
}

func (g *Gateway) try(ctx context.Context, deadline time.Time, u *Upstream, model, path string, body []byte, rid string, st *reqState) (*upstreamResult, error) {
	u.inflight.Add(1)
	inflight := g.m.forModel(model).inflight
	inflight.Inc()
	t0 := time.Now()
	defer func() {
		st.upstream += time.Since(t0)
		u.inflight.Add(-1)
		inflight.Dec()
	}()
	return g.conns(u).post(ctx, deadline, path, rid, body)
}

// conns is u's connection pool, made on first use.
func (g *Gateway) conns(u *Upstream) *connPool {
	if p := u.conns.Load(); p != nil {
		return p
	}
	p := &connPool{addr: u.Addr, dial: g.dial, idleTimeout: g.opts.IdleConnTimeout, maxIdle: 512}
	if !u.conns.CompareAndSwap(nil, p) {
		return u.conns.Load()
	}
	return p
}

// failure counts a failed attempt on u; the failure that ejects it starts an
// active probe that returns it to the pool once /v2/health/ready answers 200.
func (g *Gateway) failure(model string, u *Upstream, kind string) {
	g.m.upErrors.WithLabelValues(model, kind).Inc()
	if !u.markFailure(g.opts.EjectAfter) {
		return
	}
	g.m.ejections.WithLabelValues(model).Inc()
	g.log.Warn("replica ejected", "model", model, "upstream", u.Addr, "after_failures", g.opts.EjectAfter)
	if !u.probing.CompareAndSwap(false, true) {
		return
	}
	go g.probe(model, u)
}

func (g *Gateway) probe(model string, u *Upstream) {
	defer u.probing.Store(false)
	t := time.NewTicker(g.opts.ProbeInterval)
	defer t.Stop()
	for range t.C {
		if g.closed.Load() || !g.inPool(model, u) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Addr+runtimeapi.PathReady, nil)
		resp, err := g.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			u.fails.Store(0)
			u.ejected.Store(false)
			g.log.Info("replica back in the pool", "model", model, "upstream", u.Addr)
			return
		}
	}
}

func (g *Gateway) inPool(model string, u *Upstream) bool {
	p, ok := g.pools.Load(model)
	if !ok {
		return false
	}
	for _, x := range p.(*Pool).Upstreams() {
		if x == u {
			return true
		}
	}
	return false
}
