package gateway

import (
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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// the request's and the answer's X-Request-Id: one slice (neither is
	// changed in place)
	ids := r.Header["X-Request-Id"]
	if len(ids) > 0 && validRequestID(ids[0]) {
		ids = ids[:1:1]
	} else {
		ids = []string{newRequestID()}
		r.Header["X-Request-Id"] = ids
	}
	// (hot path headers are set by their canonical key: Header.Set would
	// canonicalize, and allocate for "ID", on every request)
	w.Header()["X-Request-Id"] = ids
	if r.Method == http.MethodPost { // the usual customer routes, without a ServeMux match
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/"); ok {
			if rest == "chat/completions" { // (before {model}/{task}, which it would match)
				g.serveOpenAI(w, r, customerapi.PathChatCompletions)
				return
			}
			if model, task, ok := strings.Cut(rest, "/"); ok && plainSegment(model) && plainSegment(task) {
				if task == customerapi.TaskGeneration || task == customerapi.TaskChatbot {
					g.serveNLPGeneration(w, r, model, task)
					return
				}
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

// route is one route of the customer API.
type route struct {
	pattern string // a ServeMux pattern
	serve   func(g *Gateway, w http.ResponseWriter, r *http.Request)
}

// routes is the gateway's routing table: New registers exactly these on
// its mux (ServeHTTP takes the usual forms of the two POST routes before
// the mux, to the same handlers), and the reference's tests check that
// openapi.yaml documents each one.
var routes = []route{
	{"POST /v1/{model}/{task}", func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveTask(w, r, r.PathValue("model"), r.PathValue("task"))
	}},
	{"POST /v1/{model}/generation", func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveNLPGeneration(w, r, r.PathValue("model"), customerapi.TaskGeneration)
	}},
	{"POST /v1/{model}/chatbot", func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveNLPGeneration(w, r, r.PathValue("model"), customerapi.TaskChatbot)
	}},
	{"POST " + customerapi.PathChatCompletions, func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveOpenAI(w, r, customerapi.PathChatCompletions)
	}},
	{"POST " + customerapi.PathCompletions, func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveOpenAI(w, r, customerapi.PathCompletions)
	}},
	{"POST " + customerapi.PathEmbeddings, func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveOpenAI(w, r, customerapi.PathEmbeddings)
	}},
	{"GET " + customerapi.PathModels, (*Gateway).serveModels},
	{"POST /v2/models/{model}/infer", func(g *Gateway, w http.ResponseWriter, r *http.Request) {
		g.serveInfer(w, r, r.PathValue("model"))
	}},
	{"GET /v2/models/{model}", (*Gateway).serveModelMetadata},
	{"POST " + customerapi.PathJobs, (*Gateway).createJob}, // asynchronous jobs (jobs.go)
	{"GET /v1/jobs/{id}", (*Gateway).serveJob},
	{"GET /v1/jobs/{id}/results", (*Gateway).serveJobResults},
	{"GET /v1/jobs/{id}/errors", (*Gateway).serveJobErrors},
	{"POST /v1/jobs/{id}/cancel", (*Gateway).cancelJob},
	{"GET " + customerapi.PathWebhookSecret, (*Gateway).serveWebhookSecret},
	{"POST " + customerapi.PathWebhookRotate, (*Gateway).rotateWebhookSecret},
	{"GET /openapi.yaml", (*Gateway).serveOpenAPIYAML},
	{"GET /openapi.json", (*Gateway).serveOpenAPIJSON},
	{"GET /docs", (*Gateway).serveReference},
}

// plainSegment: one non-empty path segment that a ServeMux would match as
// it is (no "/", not "." or "..").
func plainSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}

var jsonContentType = []string{"application/json"}

// requestID is the request's X-Request-ID (ServeHTTP makes one when the
// client sent none): Header.Get would canonicalize the name, and allocate
// for "ID", on every call.
func requestID(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

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
	keyID    int64  // the key's id (a sticky canary's split)
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
		g.log.Log(st.r.Context(), level, "request", "request_id", requestID(st.r),
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
	k, ok := g.authKey(w, r, st)
	if !ok {
		return nil, nil, false
	}
	m, ok := g.admitModel(w, r, st, k, name)
	if !ok {
		return nil, nil, false
	}
	return k, m, true
}

// authKey is admit's first half: the caller's key, of a kind that may call
// the inference API (the OpenAI-compatible routes name the model in the
// body, read after it).
func (g *Gateway) authKey(w http.ResponseWriter, r *http.Request, st *reqState) (*Key, bool) {
	if len(r.Header.Values("Authorization")) > 1 {
		// which one would a proxy in front have checked? Neither is taken.
		g.fail(w, st, http.StatusBadRequest, "invalid_request", "more than one Authorization header")
		return nil, false
	}
	tok := apikey.FromAuthorization(r.Header.Get("Authorization"))
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Token realm="nlpswarm"`)
		g.fail(w, st, http.StatusUnauthorized, "unauthorized", "missing API key: send Authorization: Token <key>")
		return nil, false
	}
	addr := remoteHost(r.RemoteAddr)
	k, err := g.keys.LookupFrom(r.Context(), tok, g.unauth, addr)
	if err != nil {
		if errors.Is(err, errNoKey) {
			g.unauth.charge(addr, time.Now())
			w.Header().Set("WWW-Authenticate", `Token realm="nlpswarm"`)
			g.fail(w, st, http.StatusUnauthorized, "unauthorized", "invalid or revoked API key")
			return nil, false
		}
		if errors.Is(err, errThrottled) {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(1/g.opts.UnauthorizedRate)))))
			g.m.shed.WithLabelValues("too_many_unauthorized").Inc()
			g.fail(w, st, http.StatusTooManyRequests, "too_many_unauthorized", "too many requests with invalid API keys from this address; retry later")
			return nil, false
		}
		g.log.Error("key lookup failed", "request_id", requestID(r), "err", err)
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "cannot check the API key now; retry")
		return nil, false
	}
	st.key, st.keyID = k.Prefix, k.ID
	if k.Kind != "inference" && k.Kind != "admin" {
		g.fail(w, st, http.StatusForbidden, "forbidden", "this key may not call the inference API")
		return nil, false
	}
	return k, true
}

// admitModel is admit's second half: the model exists and k may call it
// (a private model only its owner's keys; to the others it does not
// exist), then k's plan: request rate and monthly quota.
func (g *Gateway) admitModel(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, name string) (*Model, bool) {
	m, ok := g.catalog.Get(name)
	if !ok && !g.catalog.Loaded() {
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "the model catalogue is not loaded yet; retry")
		return nil, false
	}
	if !ok || (m.Private && m.Owner != k.AccountID) {
		g.fail(w, st, http.StatusNotFound, "model_not_found", fmt.Sprintf("no deployed model %q", name))
		return nil, false
	}
	st.model = m.Name
	v := g.limiter.Allow(r.Context(), k)
	if v.FailOpen {
		g.noteFailOpen(v.Err)
	}
	if v.Limit != "" {
		h := w.Header()
		vals := []string{v.Limit, strconv.Itoa(max(v.Remaining, 0)), strconv.Itoa(int(math.Ceil(v.Reset.Seconds())))} // (one allocation)
		h["X-Ratelimit-Limit"] = vals[0:1:1]
		h["X-Ratelimit-Remaining"] = vals[1:2:2]
		h["X-Ratelimit-Reset"] = vals[2:3:3]
	}
	if !v.Allowed {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(v.RetryAfter.Seconds())))))
		msg := "rate limit exceeded"
		if v.Reason == "quota_exceeded" {
			msg = "monthly quota exhausted"
		}
		g.fail(w, st, http.StatusTooManyRequests, v.Reason, msg)
		return nil, false
	}
	return m, true
}

// admitBody holds the request's place against the per-key in-flight cap and
// reserves its body bytes against the gateway-wide cap; it writes the
// refusal itself. The caller releases with g.releaseBody(k, n) once the
// request is done.
func (g *Gateway) admitBody(w http.ResponseWriter, r *http.Request, st *reqState, k *Key) (int64, bool) {
	if !acquireKey(k, int32(g.opts.MaxInflightPerKey)) {
		g.m.shed.WithLabelValues("too_many_inflight").Inc()
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusTooManyRequests, "too_many_inflight",
			fmt.Sprintf("this API key already has %d requests in progress", g.opts.MaxInflightPerKey))
		return 0, false
	}
	n := r.ContentLength
	if n < 0 || n > g.opts.MaxBodyBytes {
		n = g.opts.MaxBodyBytes // unknown length: the most it may read (over the cap: refused below without reading)
	}
	if !g.bodies.reserve(n) {
		releaseKey(k)
		g.m.shed.WithLabelValues("overloaded").Inc()
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusServiceUnavailable, "overloaded", "the gateway holds too many request bodies; retry")
		return 0, false
	}
	return n, true
}

func (g *Gateway) releaseBody(k *Key, n int64) {
	g.bodies.release(n)
	releaseKey(k)
}

// heldBody is a request body admitted (admitBody) and read (readBody) into
// a pooled buffer; release gives both back (a value, so that
// defer hb.release() allocates nothing).
type heldBody struct {
	g    *Gateway
	k    *Key
	n    int64
	buf  *[]byte
	body []byte
}

func (hb heldBody) release() {
	putBuf(hb.buf)
	hb.g.releaseBody(hb.k, hb.n)
}

// takeBody admits and reads the request's body; it writes the refusal
// itself (ok false: nothing to release).
func (g *Gateway) takeBody(w http.ResponseWriter, r *http.Request, st *reqState, k *Key) (heldBody, bool) {
	n, ok := g.admitBody(w, r, st, k)
	if !ok {
		return heldBody{}, false
	}
	hb := heldBody{g: g, k: k, n: n, buf: getBuf()}
	if hb.body, ok = g.readBody(w, r, st, hb.buf); !ok {
		hb.release()
		return heldBody{}, false
	}
	return hb, true
}

var retryAfterOne = []string{"1"}

// readBody reads the body into buf, growing it as bytes arrive (never from
// the declared Content-Length), up to the body cap and within the body
// deadline; the body is valid until buf goes back to the pool.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, st *reqState, buf *[]byte) ([]byte, bool) {
	if r.ContentLength > g.opts.MaxBodyBytes {
		// the body is not read: the connection closes after the answer, which
		// each front end does lingering (net/http's closeWriteAndWait, the fast
		// front end's lingerClose) so that the client, still sending, reads
		// the 413 rather than a reset
		w.Header().Set("Connection", "close")
		g.fail(w, st, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("body over %d bytes", g.opts.MaxBodyBytes))
		return nil, false
	}
	// the whole body within BodyTimeout (a connection that is not a net.Conn,
	// as in httptest's recorder, keeps the server's read timeout)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.opts.BodyTimeout))
	body, err := readAllInto((*buf)[:0], r.Body, g.opts.MaxBodyBytes)
	*buf = body
	if err != nil {
		var ne net.Error
		if errors.Is(err, errBodyTooLarge) {
			w.Header().Set("Connection", "close") // the rest of the body is not read
			g.fail(w, st, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("body over %d bytes", g.opts.MaxBodyBytes))
		} else if errors.As(err, &ne) && ne.Timeout() {
			// a body trickled slower than the body deadline (slowloris)
			w.Header().Set("Connection", "close")
			g.fail(w, st, http.StatusRequestTimeout, "request_timeout", fmt.Sprintf("the body did not arrive within %s", g.opts.BodyTimeout))
		} else {
			g.fail(w, st, http.StatusBadRequest, "invalid_request", "cannot read the body")
		}
		return nil, false
	}
	return body, true
}

var errBodyTooLarge = errors.New("body over the limit")

// readAllInto is io.ReadAll into b's storage: it grows b (by append's
// doubling) only as bytes arrive, and stops with errBodyTooLarge past limit
// bytes.
func readAllInto(b []byte, r io.Reader, limit int64) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(max(512, int64(cap(b))), limit+1-int64(len(b)))))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return b, errBodyTooLarge
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
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
	if m.GGUF { // an embedding GGUF: the generation runtime's /v1/embeddings
		g.serveGGUFEmbeddings(w, r, st, k, m)
		return
	}
	hb, ok := g.takeBody(w, r, st, k)
	if !ok {
		return
	}
	defer hb.release()
	body, bodyBuf, upBuf := hb.body, hb.buf, getBuf()
	defer putBuf(upBuf)
	texts, single, params, err := DecodeRequest(body, g.opts.MaxTexts) // (texts are copies: the body's buffer is reused below)
	if err != nil {
		g.usage.Record(k, m, 0, true) // before the answer: a kill after it loses nothing (usage.go)
		g.fail(w, st, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	up := appendRuntimeRequest(*upBuf, texts, params)
	*upBuf = up
	res, aerr := g.forward(w, r, m, runtimeapi.PathPredict, up, false, st)
	if aerr != nil {
		g.usage.Record(k, m, len(texts), true)
		g.writeErr(w, st, aerr)
		return
	}
	if res.status != http.StatusOK {
		g.usage.Record(k, m, len(texts), true)
		g.relayUpstreamError(w, st, res)
		return
	}
	answers, err := translateAll(m.Task, res.body, texts)
	if err != nil {
		g.m.upErrors.WithLabelValues(m.Name, "bad_response").Inc()
		g.log.Warn("malformed runtime answer", "request_id", requestID(r), "model", m.Name, "err", err)
		g.usage.Record(k, m, len(texts), true)
		g.fail(w, st, http.StatusBadGateway, "upstream_error", "the model runtime gave a malformed answer")
		return
	}
	*bodyBuf = appendAnswers((*bodyBuf)[:0], answers, single) // the body is no longer needed
	g.usage.Record(k, m, len(texts), false)
	st.status = http.StatusOK
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(*bodyBuf)
}

func (g *Gateway) serveInfer(w http.ResponseWriter, r *http.Request, model string) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, m, ok := g.admit(w, r, st, model)
	if !ok || g.refuseOIP(w, st, m) {
		return
	}
	hb, ok := g.takeBody(w, r, st, k)
	if !ok {
		return
	}
	defer hb.release()
	body := hb.body
	texts, err := checkInferTexts(body, g.opts.MaxTexts)
	if err != nil {
		g.usage.Record(k, m, 0, true)
		g.fail(w, st, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	res, aerr := g.forward(w, r, m, runtimeapi.InferPath(m.Name), body, true, st)
	if aerr != nil {
		g.usage.Record(k, m, texts, true)
		g.writeErr(w, st, aerr)
		return
	}
	g.usage.Record(k, m, texts, res.status >= 400) // (one request, a streamed one too)
	st.status = res.status
	if res.stream != nil {
		g.relayStream(w, r, st, res)
		return
	}
	if res.contentType != "" {
		w.Header().Set("Content-Type", res.contentType)
	}
	w.WriteHeader(res.status)
	_, _ = w.Write(res.body)
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

func (g *Gateway) writeErr(w http.ResponseWriter, st *reqState, e *gwError) {
	if e.status == apierror.StatusClientClosed { // client went away: nobody to answer
		st.status = apierror.StatusClientClosed
		return
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	g.fail(w, st, e.status, e.code, e.msg)
}

// refuseOIP answers 400 task_not_supported for a model the generation
// runtime serves (llama-server speaks OpenAI's API, not the Open Inference
// Protocol): its replica would answer the v2 routes with a bare 404. It
// names the routes that do serve the model and reports whether it refused.
func (g *Gateway) refuseOIP(w http.ResponseWriter, st *reqState, m *Model) bool {
	if !m.generationRuntime() {
		return false
	}
	routes := "/v1/completions, /v1/chat/completions or /v1/" + m.Name + "/generation"
	if m.ggufEmbeddings() {
		routes = "/v1/embeddings or /v1/" + m.Name + "/embeddings"
	}
	g.fail(w, st, http.StatusBadRequest, "task_not_supported",
		fmt.Sprintf("model %q runs on the generation runtime, which does not speak the Open Inference Protocol (v2): call %s", m.Name, routes))
	return true
}
