package models

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/bearer"
	"github.com/nlpswarm/nlpswarm/internal/coldstart"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Limits bound what one request may ask.
type Limits struct {
	MaxBodyBytes   int64         `description:"largest request body (413 beyond)"`
	MaxTexts       int           `description:"most texts in one request"`
	MaxChars       int           `description:"most characters in one text (longer texts are refused; the model truncates to max_position_embeddings tokens)"`
	MaxTotalChars  int           `description:"most characters in all of one request's texts together (413 beyond)"`
	MaxTokens      int           `description:"most tokens the model is given for one request, each text counted after its cut to max_position_embeddings (413 beyond)"`
	RequestTimeout time.Duration `description:"deadline of one request, queueing included"`
}

// DefaultLimits are the runtime's defaults: 1 Mi characters and 16384
// tokens (32 texts of BERT's 512) per request.
func DefaultLimits() Limits {
	return Limits{MaxBodyBytes: 4 << 20, MaxTexts: 256, MaxChars: 50_000, MaxTotalChars: 1 << 20, MaxTokens: 16384,
		RequestTimeout: 30 * time.Second}
}

// Server serves one model over HTTP.
type Server struct {
	name, task, digest string
	batcher            *Batcher
	limits             Limits
	metrics            *Metrics
	log                *slog.Logger
	ready              atomic.Bool
	coldStart          atomic.Pointer[coldstart.Report]
	backend            atomic.Value // string: the engine, for OIP metadata
	callCredential     atomic.Pointer[string]
	mux                *http.ServeMux
}

// NewServer serves the model behind batcher.
func NewServer(name, task, digest string, b *Batcher, lim Limits, m *Metrics, log *slog.Logger) *Server {
	s := &Server{name: name, task: task, digest: digest, batcher: b, limits: lim, metrics: m, log: log}
	mux := http.NewServeMux()
	// inference and metadata need the model's call credential (once one is
	// set); the health routes stay open: Docker's healthcheck, the
	// gateway's probes and Prometheus (/metrics, served beside) carry none
	mux.HandleFunc("POST "+runtimeapi.PathPredict, s.authorized(s.predict))
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET "+runtimeapi.PathReady, s.readyHandler)
	mux.HandleFunc("GET /v2", s.authorized(s.serverMetadata))
	mux.HandleFunc("GET /v2/models/{name}", s.authorized(s.modelMetadata))
	mux.HandleFunc("GET /v2/models/{name}/ready", s.modelReady)
	mux.HandleFunc("POST /v2/models/{name}/infer", s.authorized(s.infer))
	mux.HandleFunc("GET /coldstart", s.authorized(s.coldStartHandler))
	s.mux = mux
	return s
}

// SetCallCredential makes the inference and metadata routes answer only
// requests that carry cred as their bearer token: the model's call
// credential (internal/artifactcred.Call), which the gateway sends. Until it
// is set (or with ""), they answer anyone.
func (s *Server) SetCallCredential(cred string) { s.callCredential.Store(&cred) }

// authorized serves h only to requests with the call credential, when one
// is set; others get 401, compared in constant time (internal/bearer).
func (s *Server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c := s.callCredential.Load(); c != nil && *c != "" && !bearer.Valid(r, *c) {
			s.observe(http.StatusUnauthorized, time.Now())
			bearer.Refuse(w, "the call credential of model "+s.name+"'s runtime")
			return
		}
		h(w, r)
	}
}

// SetReady switches readiness (false while loading and once draining).
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

// SetColdStart records how this replica started, served on GET /coldstart.
func (s *Server) SetColdStart(r coldstart.Report) { s.coldStart.Store(&r) }

func (s *Server) coldStartHandler(w http.ResponseWriter, _ *http.Request) {
	r := s.coldStart.Load()
	if r == nil {
		apierror.Write(w, http.StatusServiceUnavailable, "not_ready", "model "+s.name+" is still starting")
		return
	}
	writeJSON(w, http.StatusOK, r)
}

// Ready reports readiness.
func (s *Server) Ready() bool { return s.ready.Load() }

// ServeHTTP implements http.Handler, echoing X-Request-ID.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id := r.Header.Get("X-Request-ID"); id != "" && len(id) <= 128 {
		w.Header().Set("X-Request-ID", id)
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) readyHandler(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		apierror.Write(w, http.StatusServiceUnavailable, "not_ready", "model "+s.name+" is not ready")
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) checkName(w http.ResponseWriter, r *http.Request) bool {
	if r.PathValue("name") != s.name {
		apierror.Write(w, http.StatusNotFound, "model_not_found", fmt.Sprintf("this runtime serves %q", s.name))
		return false
	}
	return true
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	if s.checkName(w, r) {
		s.readyHandler(w, r)
	}
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": "nlpswarm", "version": "1", "extensions": []string{}})
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	if !s.checkName(w, r) {
		return
	}
	out := map[string]any{"name": "output", "datatype": "BYTES", "shape": []int{-1}}
	if s.task == FeatureExtraction {
		out = map[string]any{"name": "embedding", "datatype": "FP32", "shape": []int{-1, -1}}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": s.name, "versions": []string{s.digest}, "platform": "onnx_hugot",
		"inputs":     []any{map[string]any{"name": "text", "datatype": "BYTES", "shape": []int{-1}}},
		"outputs":    []any{out},
		"parameters": map[string]any{"task": s.task, "backend": s.Backend()},
	})
}

// PredictRequest is the body of POST /predict (the wire contract).
type PredictRequest = runtimeapi.PredictRequest

// PredictResponse is its answer.
type PredictResponse = runtimeapi.PredictResponse

type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.message }

func badRequest(code, format string, a ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, a...)}
}

// readBody reads at most MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &httpError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("body larger than %d bytes", s.limits.MaxBodyBytes)}
		}
		return nil, badRequest("bad_body", "could not read the body")
	}
	return b, nil
}

// DecodePredict parses and checks a /predict body for task.
func DecodePredict(body []byte, task string, lim Limits) ([]string, Params, *httpError) {
	var req PredictRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, Params{}, badRequest("invalid_json", "body must be {\"texts\": [strings], \"parameters\": {...}}: %v", err)
	}
	if dec.More() {
		return nil, Params{}, badRequest("invalid_json", "trailing data after the JSON object")
	}
	var p Params
	if len(req.Parameters) > 0 && string(req.Parameters) != "null" {
		pd := json.NewDecoder(bytes.NewReader(req.Parameters))
		pd.DisallowUnknownFields()
		if err := pd.Decode(&p); err != nil {
			return nil, Params{}, badRequest("invalid_parameters", "parameters: %v", err)
		}
	}
	if err := p.Check(task); err != nil {
		return nil, Params{}, badRequest("invalid_parameters", "%v", err)
	}
	texts, herr := checkTexts(req.Texts, lim)
	return texts, p, herr
}

func checkTexts(in []string, lim Limits) ([]string, *httpError) {
	if len(in) == 0 {
		return nil, badRequest("no_texts", "texts must hold at least one string")
	}
	if len(in) > lim.MaxTexts {
		return nil, &httpError{http.StatusRequestEntityTooLarge, "too_many_texts", fmt.Sprintf("at most %d texts per request, got %d", lim.MaxTexts, len(in))}
	}
	out := make([]string, len(in))
	total := 0
	for i, t := range in {
		n := utf8.RuneCountInString(t)
		if n > lim.MaxChars {
			return nil, &httpError{http.StatusRequestEntityTooLarge, "text_too_long", fmt.Sprintf("text %d has %d characters; at most %d", i, n, lim.MaxChars)}
		}
		if total += n; lim.MaxTotalChars > 0 && total > lim.MaxTotalChars {
			return nil, &httpError{http.StatusRequestEntityTooLarge, "request_too_long", fmt.Sprintf("the texts hold more than %d characters together; at most %d per request", lim.MaxTotalChars, lim.MaxTotalChars)}
		}
		out[i] = Clean(t)
	}
	return out, nil
}

// prepare cuts texts to what the model keeps and counts its tokens, in the
// request's goroutine (prepare.go), and refuses a request over MaxTokens.
// A predictor that cannot count (a test's stand-in) passes texts as they are.
func (s *Server) prepare(texts []string) ([]string, []int, *httpError) {
	pr, ok := s.batcher.Predictor().(Preparer)
	if !ok {
		return texts, nil, nil
	}
	cut, counts, err := pr.Prepare(texts)
	if err != nil {
		s.log.Warn("tokenizing failed", "err", err)
		return nil, nil, &httpError{http.StatusUnprocessableEntity, "inference_failed", "the model could not tokenize this input"}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	if s.limits.MaxTokens > 0 && total > s.limits.MaxTokens {
		return nil, nil, &httpError{http.StatusRequestEntityTooLarge, "too_many_tokens",
			fmt.Sprintf("the texts make %d tokens for the model (each text counted up to the model's positions); at most %d per request", total, s.limits.MaxTokens)}
	}
	return cut, counts, nil
}

func (s *Server) run(ctx context.Context, texts []string, p Params, background bool) ([]any, *httpError) {
	if !s.ready.Load() {
		return nil, &httpError{runtimeapi.StatusNotReady, runtimeapi.CodeNotReady, "model is not ready"}
	}
	texts, tokens, herr := s.prepare(texts)
	if herr != nil {
		return nil, herr
	}
	ctx, cancel := context.WithTimeout(ctx, s.limits.RequestTimeout)
	defer cancel()
	submit := s.batcher.SubmitCounted
	if background {
		submit = s.batcher.SubmitBackground
	}
	out, err := submit(ctx, texts, tokens, p)
	switch {
	case err == nil:
		if i := nonFinite(out); i >= 0 {
			// a broken model (weights, an overflow): the input is fine and
			// JSON has no NaN. 500, the model's fault, which the gateway
			// relays and counts against the version (a canary's error
			// rate), never against the replica's health
			s.log.Warn("inference gave non-finite output", "text", i)
			return nil, &httpError{http.StatusInternalServerError, "inference_failed", fmt.Sprintf("the model's output for text %d is not a finite number (NaN or infinity)", i)}
		}
		return out, nil
	case errors.Is(err, ErrQueueFull):
		// healthy but full: 429, which callers never count against the
		// replica (runtimeapi), where a 503 would get it ejected
		return nil, &httpError{runtimeapi.StatusOverloaded, runtimeapi.CodeOverloaded, "the model's queue is full; retry shortly"}
	case errors.Is(err, context.DeadlineExceeded):
		return nil, &httpError{http.StatusGatewayTimeout, "timeout", "inference did not finish in time"}
	case errors.Is(err, context.Canceled):
		return nil, &httpError{apierror.StatusClientClosed, "canceled", "client went away"}
	default:
		s.log.Warn("inference failed", "err", err)
		return nil, &httpError{http.StatusUnprocessableEntity, "inference_failed", "the model could not process this input"}
	}
}

// nonFinite is the index of the first output holding a NaN or infinite
// score or embedding value, or -1.
func nonFinite(out []any) int {
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	for i, o := range out {
		switch o := o.(type) {
		case []Label:
			for _, l := range o {
				if bad(l.Score) {
					return i
				}
			}
		case []Entity:
			for _, e := range o {
				if bad(e.Score) {
					return i
				}
			}
		case Embedding:
			for _, x := range o.Embedding {
				if bad(float64(x)) {
					return i
				}
			}
		}
	}
	return -1
}

func (s *Server) fail(w http.ResponseWriter, e *httpError, start time.Time) {
	if e.status == runtimeapi.StatusNotReady || e.status == runtimeapi.StatusOverloaded {
		w.Header().Set("Retry-After", strconv.Itoa(runtimeapi.RetryAfterSeconds))
	}
	s.observe(e.status, start)
	if e.status == apierror.StatusClientClosed {
		return
	}
	apierror.Write(w, e.status, e.code, e.message)
}

func (s *Server) observe(status int, start time.Time) {
	st := strconv.Itoa(status)
	s.metrics.requests.WithLabelValues(s.task, st).Inc()
	s.metrics.latency.WithLabelValues(s.task, st).Observe(time.Since(start).Seconds())
}

func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, herr := s.readBody(w, r)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	texts, p, herr := DecodePredict(body, s.task, s.limits)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	// a job's texts (runtimeapi.PathPredictBackground) wait for the
	// interactive requests
	background := r.URL.RawQuery != "" && r.URL.Query().Get(runtimeapi.QueryPriority) == runtimeapi.PriorityBackground
	out, herr := s.run(r.Context(), texts, p, background)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	s.observe(http.StatusOK, start)
	writeJSON(w, http.StatusOK, PredictResponse{Model: s.name, Task: s.task, Outputs: out})
}

// Open Inference Protocol v2 request and response.
type inferTensor struct {
	Name       string          `json:"name"`
	Shape      []int           `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Inputs     []inferTensor   `json:"inputs"`
	Outputs    json.RawMessage `json:"outputs,omitempty"`
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !s.checkName(w, r) {
		return
	}
	body, herr := s.readBody(w, r)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	var req inferRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.fail(w, badRequest("invalid_json", "body must be an inference request: %v", err), start)
		return
	}
	var in *inferTensor
	for i := range req.Inputs {
		if req.Inputs[i].Name == "text" {
			in = &req.Inputs[i]
		}
	}
	if in == nil {
		s.fail(w, badRequest("missing_input", "want a BYTES input named text"), start)
		return
	}
	if in.Datatype != "BYTES" {
		s.fail(w, badRequest("bad_datatype", "input text must be BYTES, got %q", in.Datatype), start)
		return
	}
	var raw []string
	if err := json.Unmarshal(in.Data, &raw); err != nil {
		// the protocol also allows nested arrays for shape [n,1]
		raw = nil
		var nested [][]string
		if err2 := json.Unmarshal(in.Data, &nested); err2 != nil {
			s.fail(w, badRequest("bad_data", "input text data must be an array of strings"), start)
			return
		}
		for _, n := range nested {
			raw = append(raw, n...)
		}
	}
	total := 1
	for _, d := range in.Shape {
		total *= d
	}
	if len(in.Shape) == 0 || total != len(raw) {
		s.fail(w, badRequest("bad_shape", "shape %v does not match %d strings", in.Shape, len(raw)), start)
		return
	}
	var p Params
	if len(req.Parameters) > 0 && string(req.Parameters) != "null" {
		_ = json.Unmarshal(req.Parameters, &p)
	}
	if err := p.Check(s.task); err != nil {
		s.fail(w, badRequest("invalid_parameters", "%v", err), start)
		return
	}
	texts, herr := checkTexts(raw, s.limits)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	out, herr := s.run(r.Context(), texts, p, false)
	if herr != nil {
		s.fail(w, herr, start)
		return
	}
	var tensor map[string]any
	if s.task == FeatureExtraction {
		dim := 0
		var flat []float32
		for _, o := range out {
			e := o.(Embedding).Embedding
			dim = len(e)
			flat = append(flat, e...)
		}
		tensor = map[string]any{"name": "embedding", "datatype": "FP32", "shape": []int{len(out), dim}, "data": flat}
	} else {
		data := make([]string, len(out))
		for i, o := range out {
			b, _ := json.Marshal(o)
			data[i] = string(b)
		}
		tensor = map[string]any{"name": "output", "datatype": "BYTES", "shape": []int{len(out)}, "data": data,
			"parameters": map[string]any{"content_type": "application/json"}}
	}
	resp := map[string]any{"model_name": s.name, "model_version": s.digest, "outputs": []any{tensor}}
	if req.ID != "" {
		resp["id"] = req.ID
	}
	s.observe(http.StatusOK, start)
	writeJSON(w, http.StatusOK, resp)
}

// writeJSON encodes v before the status goes out: a value JSON cannot
// hold is the runtime's 500, not a 200 with no body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		apierror.Write(w, http.StatusInternalServerError, "internal", "the answer could not be encoded: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
