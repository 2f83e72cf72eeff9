package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/rdb/rdbtest"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/models"
)

// testRuntime is the real model runtime (models.Server and its batcher)
// serving a stub predictor instead of a loaded model: canned outputs in the
// shape of its task, so that the gateway is tested against the runtime's own
// wire format and statuses. A forced status stands in only for answers the
// runtime gives in cases a test cannot provoke (a 500).
type testRuntime struct {
	*httptest.Server
	rt      *models.Server
	stub    *stubPredictor
	hits    atomic.Int64 // /predict and infer requests
	model   string       // the model it serves in the gateway (env.model)
	status  atomic.Int32 // forced status for /predict when non-zero
	lastRID atomic.Value
}

// stubPredictor answers like a model of its task. delay makes each call
// slow; hold, when set, blocks each call until it is closed (a busy model);
// fail makes each call fail (the runtime's 422).
type stubPredictor struct {
	task    string
	delay   atomic.Int64 // nanoseconds
	hold    atomic.Pointer[chan struct{}]
	started chan struct{} // gets a value as each call starts (dropped when full)
	fail    atomic.Bool
}

func (p *stubPredictor) Predict(_ context.Context, texts []string, _ models.Params) ([]any, error) {
	select {
	case p.started <- struct{}{}:
	default:
	}
	if h := p.hold.Load(); h != nil {
		<-*h
	}
	if d := p.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	if p.fail.Load() {
		return nil, errors.New("stub failure")
	}
	outs := make([]any, len(texts))
	for i, text := range texts {
		switch p.task {
		case runtimeapi.TextClassification:
			outs[i] = []runtimeapi.Label{{Label: "POSITIVE", Score: 0.9}, {Label: "NEGATIVE", Score: 0.1}}
		case runtimeapi.TokenClassification:
			end := strings.IndexByte(text, ' ')
			if end < 0 {
				end = len(text)
			}
			outs[i] = []runtimeapi.Entity{{EntityGroup: "PER", Score: 0.99, Word: strings.ToLower(text[:end]), Start: 0, End: end}}
		case runtimeapi.FeatureExtraction:
			outs[i] = runtimeapi.Embedding{Embedding: []float32{0.1, 0.2, float32(len(text))}}
		}
	}
	return outs, nil
}

// runtimeOpts tunes newRuntime: the batcher's queue and batch size.
type runtimeOpts struct {
	name           string // model name served on /v2 (default "sentiment")
	queue, maxSize int
}

func newRuntime(t testing.TB, task string) *testRuntime {
	return newRuntimeWith(t, task, runtimeOpts{})
}

func newRuntimeWith(t testing.TB, task string, o runtimeOpts) *testRuntime {
	if o.name == "" {
		o.name = "sentiment"
	}
	bc := models.DefaultBatchConfig()
	if o.queue > 0 {
		bc.Queue = o.queue
	}
	if o.maxSize > 0 {
		bc.MaxSize = o.maxSize
	}
	stub := &stubPredictor{task: task, started: make(chan struct{}, 64)}
	m := models.NewMetrics(nil)
	b := models.NewBatcher(stub, bc, m)
	ctx, cancel := context.WithCancel(context.Background())
	go b.Run(ctx)
	srv := models.NewServer(o.name, task, "sha256:test", b, models.DefaultLimits(), m, slog.New(slog.DiscardHandler))
	srv.SetReady(true)
	f := &testRuntime{rt: srv, stub: stub}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			f.hits.Add(1)
			f.lastRID.Store(r.Header.Get("X-Request-ID"))
			if s := f.status.Load(); s != 0 && r.URL.Path == runtimeapi.PathPredict {
				apierror.Write(w, int(s), "forced", "forced by the test")
				return
			}
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		f.release()
		f.Close()
		cancel()
	})
	return f
}

func (f *testRuntime) addr() string { return strings.TrimPrefix(f.URL, "http://") }

// setReady switches the runtime's readiness (not ready: 503 on /predict and
// /v2/health/ready, as while loading or draining).
func (f *testRuntime) setReady(v bool) { f.rt.SetReady(v) }

// block makes the model hang on each call until release.
func (f *testRuntime) block() {
	ch := make(chan struct{})
	f.stub.hold.Store(&ch)
}

// release lets blocked calls finish.
func (f *testRuntime) release() {
	if h := f.stub.hold.Swap(nil); h != nil {
		close(*h)
	}
}

// env is a gateway on a fresh database, with accounts, keys and models.
type env struct {
	t      testing.TB
	db     *pgtest.DB
	rdb    *redis.Client
	prefix string
	gw     *Gateway
	srv    *httptest.Server
	static StaticDiscovery
	reg    *prometheus.Registry
	log    *slog.Logger
	// upstream names the upstream client when the test's Config does not
	upstream string
	// callKey is the gateway's Deps.CallKey (newEnv: testCallKey)
	callKey []byte
}

func newEnv(t testing.TB, withRedis bool) *env {
	t.Helper()
	e := &env{t: t, db: pgtest.New(t, true), static: StaticDiscovery{}, reg: prometheus.NewRegistry(), callKey: testCallKey}
	if withRedis {
		e.rdb, e.prefix = rdbtest.New(t)
	}
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) id(sql string, args ...any) int64 {
	e.t.Helper()
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&id); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

// account creates an account on plan ("free", "standard", or "" for none).
func (e *env) account(name, plan string) int64 {
	if plan == "" {
		return e.id(`INSERT INTO accounts(name) VALUES ($1) RETURNING id`, name)
	}
	return e.id(`INSERT INTO accounts(name, plan_id) VALUES ($1, (SELECT id FROM plans WHERE name=$2)) RETURNING id`, name, plan)
}

func (e *env) key(account int64, kind string) (string, int64) {
	key, prefix, hash, err := apikey.Generate()
	if err != nil {
		e.t.Fatal(err)
	}
	id := e.id(`INSERT INTO api_keys(account_id, prefix, hash, kind) VALUES ($1,$2,$3,$4) RETURNING id`, account, prefix, hash, kind)
	return key, id
}

// testCallKey is the call key of the package's gateways (Deps.CallKey): as
// the scheduler gives its replicas, every test runtime requires the call
// credential of the model it serves (env.model), so every test with real
// runtimes goes through it, on both upstream clients.
var testCallKey = func() []byte {
	k, err := artifactcred.CallKey(strings.Repeat("call-secret-", 4))
	if err != nil {
		panic(err)
	}
	return k
}()

// callAuth is the Authorization value the runtimes of model require.
func callAuth(model string) string { return bearer.Header(artifactcred.Call(testCallKey, model)) }

// model creates a deployed model served by the given runtimes, which then
// require its call credential.
func (e *env) model(name, task string, owner int64, rts ...*testRuntime) int64 {
	var id int64
	if owner != 0 {
		id = e.id(`INSERT INTO models(name, task, visibility, owner_account_id) VALUES ($1,$2,'private',$3) RETURNING id`, name, task, owner)
	} else {
		id = e.id(`INSERT INTO models(name, task) VALUES ($1,$2) RETURNING id`, name, task)
	}
	e.exec(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, $2)`, id, max(len(rts), 1))
	for _, rt := range rts {
		e.static[name] = append(e.static[name], rt.addr())
		rt.model = name
		rt.rt.SetCallCredential(artifactcred.Call(testCallKey, name))
	}
	return id
}

func (e *env) start(opts Config) *Gateway {
	e.t.Helper()
	return e.startWith(opts, e.static)
}

// startWith starts the gateway on disc instead of the static discovery.
func (e *env) startWith(opts Config, disc Discoverer) *Gateway {
	e.t.Helper()
	if opts.RedisPrefix == "" {
		opts.RedisPrefix = e.prefix
	}
	if opts.Upstream == "" {
		opts.Upstream = e.upstream
	}
	deps := Deps{DB: e.db.Pool, Discovery: disc, Registry: e.reg, Log: e.log, KeySecret: testKeySecret, CallKey: e.callKey}
	if e.rdb != nil {
		deps.Redis = e.rdb
	}
	g, err := New(context.Background(), opts, deps)
	if err != nil {
		e.t.Fatal(err)
	}
	e.gw = g
	e.srv = serveFrontend(e.t, g, opts)
	e.t.Cleanup(func() {
		e.srv.Close()
		g.Close(context.Background())
	})
	return g
}

// testFrontend is the front end the package's tests run on this time:
// TestMain runs every test once on each (frontend_test.go).
var testFrontend = FrontendNetHTTP

// serveFrontend serves h on a loopback listener with testFrontend, as
// httptest.NewServer does with net/http's server; its Close stops it.
func serveFrontend(t testing.TB, h http.Handler, cfg Config) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if testFrontend == FrontendNetHTTP {
		srv.Start()
		return srv
	}
	fs := newFastServer(httpserver.Options{}, cfg, h, nil)
	done := make(chan struct{})
	go func() { defer close(done); _ = fs.Serve(srv.Listener) }()
	srv.URL = "http://" + srv.Listener.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = fs.Shutdown(ctx)
		<-done
	})
	return srv
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) post(key, path, body string) answer {
	e.t.Helper()
	return e.call(http.MethodPost, key, path, body)
}

// call sends method to path with key (none: "") and body (none: "").
func (e *env) call(method, key, path, body string) answer {
	e.t.Helper()
	var rd io.Reader
	if body != "" || method == http.MethodPost {
		rd = bytes.NewBufferString(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Token "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func (a answer) code() string {
	if m, ok := a.body["error"].(map[string]any); ok {
		s, _ := m["code"].(string)
		return s
	}
	return ""
}

func newReq(url string, body io.Reader) (*http.Request, error) {
	return http.NewRequest("POST", url, body)
}

// fill makes rt busy: its model hangs on a call (block) and its queue is
// full, so that it answers 429 overloaded. The requests that fill it are
// sent directly, not through the gateway.
func (f *testRuntime) fill(t testing.TB) {
	t.Helper()
	f.block()
	c := &http.Client{Timeout: 300 * time.Millisecond}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// one that times out has taken its place: in the model or the queue
		req, _ := http.NewRequest(http.MethodPost, f.URL+runtimeapi.PathPredict, strings.NewReader(`{"texts":["x"]}`))
		req.Header.Set("Authorization", callAuth(f.model))
		resp, err := c.Do(req)
		if err != nil {
			continue
		}
		var ae apierror.Body
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&ae)
		resp.Body.Close()
		if ae.Error.Code == runtimeapi.CodeOverloaded { // (by its code: its status is what the test checks)
			return
		}
	}
	t.Fatal("the runtime's queue did not fill")
}

// eachUpstream runs test once with each upstream client (Config.Upstream):
// both must behave the same.
func eachUpstream(t *testing.T, test func(t *testing.T, upstream string)) {
	for _, kind := range []string{upstreamFast, upstreamNetHTTP} {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}
