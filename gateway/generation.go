package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Generation (issue 15): the customer routes of text-generation models,
// relayed to the generation runtime's replicas (generation/, llama-server's
// OpenAI-compatible API behind the model's call credential):
//
//   - POST /v1/chat/completions, /v1/completions, /v1/embeddings: OpenAI's
//     bodies, passed on as they are, the model named by the body's "model";
//     GET /v1/models lists the generation models the key may call;
//   - POST /v1/{model}/generation and /v1/{model}/chatbot: NLP Cloud's
//     bodies and answers, translated to and from /v1/completions and
//     /v1/chat/completions.
//
// Admission is the task routes' (key, model, private models for their
// owner only, request rate and quota) plus the plan's token budgets
// (tokenlimit.go). "stream": true answers are relayed event by event as
// they come (relayGeneration); the gateway asks the replica for the usage
// event (stream_options.include_usage) and, when the client did not ask for
// it, keeps it from the client. Tokens are counted (usage, limits) from the
// answer's usage object.

// genHead is what the gateway reads of an OpenAI-compatible body; the rest
// goes to the replica untouched.
type genHead struct {
	Model         string          `json:"model"`
	Stream        bool            `json:"stream"`
	StreamOptions json.RawMessage `json:"stream_options"`
}

// decodeGenHead reads the model and the stream options of an
// OpenAI-compatible body; includeUsage says the client asked for the usage
// event of a stream.
func decodeGenHead(body []byte) (h genHead, includeUsage bool, err error) {
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return h, false, errors.New("body is not a JSON object")
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return h, false, fmt.Errorf("body is not a JSON object of the expected shape: %s", jsonErr(err))
	}
	if h.Model == "" {
		return h, false, errors.New(`"model" is missing: name the model to call`)
	}
	if len(h.StreamOptions) > 0 && !bytes.Equal(h.StreamOptions, []byte("null")) {
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		if err := json.Unmarshal(h.StreamOptions, &so); err != nil {
			return h, false, fmt.Errorf(`"stream_options": %s`, jsonErr(err))
		}
		includeUsage = so.IncludeUsage
	}
	return h, includeUsage, nil
}

// withIncludeUsage is body (a JSON object that decodeGenHead accepted)
// asking for a stream's usage event: "stream_options" put first when the
// body has none, else its include_usage set.
func withIncludeUsage(body []byte, h genHead) ([]byte, error) {
	if len(h.StreamOptions) == 0 {
		i := bytes.IndexByte(body, '{')
		out := make([]byte, 0, len(body)+40)
		out = append(out, body[:i+1]...)
		out = append(out, `"stream_options":{"include_usage":true}`...)
		if rest := bytes.TrimSpace(body[i+1:]); len(rest) > 0 && rest[0] != '}' {
			out = append(out, ',')
		}
		return append(out, body[i+1:]...), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	so := map[string]json.RawMessage{}
	if !bytes.Equal(h.StreamOptions, []byte("null")) {
		if err := json.Unmarshal(h.StreamOptions, &so); err != nil {
			return nil, err
		}
	}
	so["include_usage"] = json.RawMessage("true")
	raw, err := json.Marshal(so)
	if err != nil {
		return nil, err
	}
	obj["stream_options"] = raw
	return json.Marshal(obj)
}

// genCall is what a generation route sends to a replica.
type genCall struct {
	path   string // on the replica
	body   []byte
	stream bool
	strip  bool // the stream's usage event is the gateway's, not the client's
	texts  int  // the texts usage counts (0: one, a generation request)
	// nlp turns a stream's OpenAI events into an NLP Cloud route's
	// (nlpstream.go); nil: relayed as they are
	nlp *nlpStream
	// answer turns a whole answer into the route's (nil: as it is)
	answer func(body []byte, u tokenUsage) ([]byte, error)
}

// tokenUsage is an answer's token count.
type tokenUsage struct {
	in, out int64
	known   bool // from a usage object (else: out estimated, in unknown)
}

// serveOpenAI serves the OpenAI-compatible POST routes at path (the same
// path on the replica).
func (g *Gateway) serveOpenAI(w http.ResponseWriter, r *http.Request, path string) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, ok := g.authKey(w, r, st)
	if !ok {
		return
	}
	hb, ok := g.takeBody(w, r, st, k)
	if !ok {
		return
	}
	defer hb.release()
	body := hb.body
	h, includeUsage, err := decodeGenHead(body)
	if err != nil {
		g.fail(w, st, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	m, ok := g.admitGeneration(w, r, st, k, h.Model, path)
	if !ok {
		return
	}
	call := genCall{path: path, body: body, stream: h.Stream}
	if h.Stream && path != customerapi.PathEmbeddings && !includeUsage {
		if call.body, err = withIncludeUsage(body, h); err != nil {
			g.fail(w, st, http.StatusBadRequest, "invalid_request", "body is not a JSON object of the expected shape")
			return
		}
		call.strip = true
	}
	g.generate(w, r, st, k, m, call)
}

// admitGeneration is admit's model half for a generation route at path:
// the model exists and the key may call it, the plan's request limits, a
// model the route serves (a text-generation model; for /v1/embeddings an
// embedding GGUF too), the plan's token budgets.
func (g *Gateway) admitGeneration(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, name, path string) (*Model, bool) {
	m, ok := g.admitModel(w, r, st, k, name)
	if !ok {
		return nil, false
	}
	switch {
	case m.Task == customerapi.TextGeneration:
	case path == customerapi.PathEmbeddings && m.ggufEmbeddings():
	case path == customerapi.PathEmbeddings && m.Task == runtimeapi.FeatureExtraction:
		g.fail(w, st, http.StatusBadRequest, "task_not_supported",
			fmt.Sprintf("model %q is an ONNX embeddings model: call it at %s", m.Name, customerapi.TaskPath(m.Name, customerapi.TaskEmbeddings)))
		return nil, false
	default:
		want := "text generation"
		if path == customerapi.PathEmbeddings {
			want = "text generation or GGUF embeddings"
		}
		g.fail(w, st, http.StatusBadRequest, "task_not_supported", fmt.Sprintf("model %q does %s, not %s", m.Name, m.Task, want))
		return nil, false
	}
	if !g.allowTokens(w, r, st, k) {
		return nil, false
	}
	return m, true
}

// allowTokens applies the plan's token budgets to k's request.
func (g *Gateway) allowTokens(w http.ResponseWriter, r *http.Request, st *reqState, k *Key) bool {
	v := g.limiter.AllowTokens(r.Context(), k)
	if v.FailOpen {
		g.noteFailOpen(v.Err)
	}
	if !v.Allowed {
		g.refuseTokens(w, st, v)
		return false
	}
	return true
}

// generate sends call to a replica of m and answers: a stream relayed as
// it comes, a whole answer (translated by call.answer), or the error.
func (g *Gateway) generate(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, m *Model, call genCall) {
	texts := max(call.texts, 1)
	res, aerr := g.forward(w, r, m, call.path, call.body, call.stream, st)
	if aerr != nil {
		g.usage.Record(k, m, texts, true)
		g.writeErr(w, st, aerr)
		return
	}
	if res.stream != nil {
		g.usage.Record(k, m, texts, false) // (before the answer: usage.go)
		st.status = res.status
		u := g.relayGeneration(w, r, st, res, call.strip, call.nlp)
		g.chargeTokens(k, m, u)
		return
	}
	if res.status != http.StatusOK {
		g.usage.Record(k, m, texts, true)
		g.relayGenerationError(w, st, res)
		return
	}
	u := usageOf(res.body)
	out := res.body
	if call.answer != nil {
		var err error
		if out, err = call.answer(res.body, u); err != nil {
			g.m.upErrors.WithLabelValues(m.Name, "bad_response").Inc()
			g.log.Warn("malformed generation answer", "request_id", requestID(r), "model", m.Name, "err", err)
			g.usage.Record(k, m, texts, true)
			g.fail(w, st, http.StatusBadGateway, "upstream_error", "the model runtime gave a malformed answer")
			return
		}
	}
	g.usage.Record(k, m, texts, false)
	g.chargeTokens(k, m, u)
	st.status = http.StatusOK
	ct := res.contentType
	if call.answer != nil || ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(out)
}

// chargeTokens meters an answer's tokens (usage) and charges them to the
// key's token budgets.
func (g *Gateway) chargeTokens(k *Key, m *Model, u tokenUsage) {
	if u.in <= 0 && u.out <= 0 {
		return
	}
	g.usage.RecordTokens(k, m, u.in, u.out)
	g.m.tokens.WithLabelValues(m.Name, "input").Add(float64(max(u.in, 0)))
	g.m.tokens.WithLabelValues(m.Name, "output").Add(float64(max(u.out, 0)))
	if err := g.limiter.ChargeTokens(k, u.in+u.out); err != nil {
		g.noteFailOpen(err)
	}
}

// noteFailOpen counts a limit skipped because Redis failed, with a warning
// at most every 10 s.
func (g *Gateway) noteFailOpen(err error) {
	g.m.failOpen.Inc()
	if now := time.Now().UnixNano(); now-g.lastWarn.Load() > int64(10*time.Second) {
		g.lastWarn.Store(now)
		g.log.Warn("redis unavailable: rate limits and quotas not applied (fail-open)", "err", err)
	}
}

// usageOf reads the usage object of a whole answer (none: unknown).
func usageOf(body []byte) tokenUsage {
	var a struct {
		Usage *customerapi.Usage `json:"usage"`
	}
	if json.Unmarshal(body, &a) != nil || a.Usage == nil {
		return tokenUsage{}
	}
	return tokenUsage{in: max(a.Usage.PromptTokens, 0), out: max(a.Usage.CompletionTokens, 0), known: true}
}

// relayGenerationError answers a replica's non-200 in the API's error
// shape: llama-server's 4xx (its error object has a numeric code and a
// message) keep their status as model_rejected_input; 5xx become 502.
func (g *Gateway) relayGenerationError(w http.ResponseWriter, st *reqState, res *upstreamResult) {
	var ae struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(res.body, &ae) == nil {
		msg = ae.Error.Message
	}
	if msg == "" {
		msg = strings.TrimSpace(string(res.body))
	}
	msg = truncateUTF8(msg, 500)
	if res.status >= 400 && res.status < 500 && res.status != http.StatusUnauthorized {
		g.fail(w, st, res.status, "model_rejected_input", msg)
		return
	}
	g.fail(w, st, http.StatusBadGateway, "upstream_error", fmt.Sprintf("model runtime answered %d: %s", res.status, msg))
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxPendingEvent bounds an event held while its end has not arrived; a
// longer one is passed on as it is (unparsed).
const maxPendingEvent = 1 << 20

// relayGeneration relays an OpenAI event stream as it comes: each read's
// complete events are written and flushed at once (an event's end is a
// blank line; the unfinished tail waits for the next read). An event with a
// usage object gives the tokens; with strip, the usage event the gateway
// asked for (no choices) is not passed on. The client going away ends the
// upstream request (the request's context, then Close); the replica
// failing mid-stream ends the stream with an error event,
// data: {"error":{...}}, as OpenAI's streams carry errors. It returns the
// stream's usage: from its usage event, else the content events counted as
// output tokens (a stream cut short).
//
// With nlp, the events are an NLP Cloud route's instead (nlpStream.scan):
// each content event becomes a piece of the answer, and the end the whole
// answer then [DONE].
func (g *Gateway) relayGeneration(w http.ResponseWriter, r *http.Request, st *reqState, res *upstreamResult, strip bool, nlp *nlpStream) tokenUsage {
	defer res.stream.Close()
	h := w.Header()
	ct := res.contentType
	if ct == "" {
		ct = "text/event-stream"
	}
	h["Content-Type"] = []string{ct}
	h["Cache-Control"] = []string{"no-cache"}
	h["X-Accel-Buffering"] = []string{"no"}
	w.WriteHeader(res.status)
	rc := http.NewResponseController(w)
	var u tokenUsage
	var events int64
	if rc.Flush() != nil {
		st.status = apierror.StatusClientClosed
		return u
	}
	buf := getBuf()
	defer putBuf(buf)
	if cap(*buf) < 32<<10 {
		*buf = make([]byte, 0, 32<<10)
	}
	acc := (*buf)[:0]
	out := make([]byte, 0, 4<<10)
	write := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil || rc.Flush() != nil {
			st.status = apierror.StatusClientClosed // the client went away
			return false
		}
		return true
	}
	for {
		if len(acc) == cap(acc) {
			acc = slices.Grow(acc, cap(acc))
		}
		n, err := res.stream.Read(acc[len(acc):cap(acc)])
		acc = acc[:len(acc)+n]
		if n > 0 {
			end := eventsEnd(acc)
			if end == 0 && len(acc) > maxPendingEvent {
				end = len(acc) // no end in sight: passed on unparsed
			}
			out = out[:0]
			if nlp != nil {
				out = nlp.scan(out, acc[:end], &u, &events)
			} else {
				out = scanEvents(out, acc[:end], strip, &u, &events)
			}
			if !write(out) {
				*buf = acc[:0]
				return estimate(u, events)
			}
			acc = acc[:copy(acc, acc[end:])]
		}
		if err == nil {
			continue
		}
		*buf = acc[:0]
		if err == io.EOF {
			out = out[:0]
			if nlp != nil {
				// an unfinished last event, then the whole answer if the
				// replica's [DONE] did not come
				out = nlp.finish(nlp.scan(out, acc, &u, &events), estimate(u, events))
			} else if len(acc) > 0 { // an unfinished last event
				out = scanEvents(out, acc, strip, &u, &events)
			}
			write(out)
			return estimate(u, events)
		}
		if r.Context().Err() != nil {
			st.status = apierror.StatusClientClosed
			return estimate(u, events)
		}
		g.m.upErrors.WithLabelValues(st.model, "stream").Inc()
		g.log.Warn("generation stream failed", "request_id", requestID(r), "model", st.model, "err", err)
		st.status = http.StatusBadGateway // (the metrics' and the log's: the client got its 200)
		ev, _ := json.Marshal(apierror.New("upstream_error", "the model runtime's stream failed"))
		write(append(append([]byte("data: "), ev...), "\n\n"...))
		return estimate(u, events)
	}
}

// estimate is a stream's usage: as its usage event said, else its content
// events as output tokens (one token per event, as llama-server streams).
func estimate(u tokenUsage, events int64) tokenUsage {
	if u.known {
		return u
	}
	return tokenUsage{out: events}
}

// eventsEnd is the length of b's complete events: up to and including its
// last blank line ("\n\n" or "\n\r\n"); 0 when none is complete.
func eventsEnd(b []byte) int {
	end := 0
	if i := bytes.LastIndex(b, []byte("\n\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.LastIndex(b, []byte("\n\r\n")); i >= 0 && i+3 > end {
		end = i + 3
	}
	return end
}

var usageField = []byte(`"usage"`)

// scanEvents appends the events of b (complete ones, or an unfinished tail)
// to out, reading the usage of an event that has one, and leaving out, with
// strip, a usage event without choices (the one the gateway asked for).
// Content events (data but no usage) are counted in events. Events without
// a usage field are passed on as they are, without decoding.
func scanEvents(out, b []byte, strip bool, u *tokenUsage, events *int64) []byte {
	if !bytes.Contains(b, usageField) { // the usual read: content events only
		*events += int64(bytes.Count(b, []byte("data: {")))
		return append(out, b...)
	}
	for len(b) > 0 {
		ev := b
		if i := eventsEnd1(b); i > 0 {
			ev = b[:i]
		}
		b = b[len(ev):]
		if !bytes.Contains(ev, usageField) {
			*events += int64(bytes.Count(ev, []byte("data: {")))
			out = append(out, ev...)
			continue
		}
		var d struct {
			Choices json.RawMessage    `json:"choices"`
			Usage   *customerapi.Usage `json:"usage"`
		}
		if json.Unmarshal(eventData(ev), &d) != nil || d.Usage == nil {
			*events++
			out = append(out, ev...)
			continue
		}
		u.in, u.out, u.known = max(d.Usage.PromptTokens, 0), max(d.Usage.CompletionTokens, 0), true
		if strip && isEmptyList(d.Choices) {
			continue
		}
		out = append(out, ev...)
	}
	return out
}

// eventsEnd1 is the length of b's first complete event (0: none).
func eventsEnd1(b []byte) int {
	i := bytes.Index(b, []byte("\n\n"))
	j := bytes.Index(b, []byte("\n\r\n"))
	switch {
	case i < 0 && j < 0:
		return 0
	case j < 0 || (i >= 0 && i < j):
		return i + 2
	default:
		return j + 3
	}
}

// eventData is the data of one event: its data lines' values joined by
// newlines.
func eventData(ev []byte) []byte {
	var data []byte
	for _, line := range bytes.Split(ev, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
		}
	}
	return data
}

func isEmptyList(raw json.RawMessage) bool {
	var l []json.RawMessage
	return len(raw) == 0 || bytes.Equal(raw, []byte("null")) || (json.Unmarshal(raw, &l) == nil && len(l) == 0)
}

// serveModels answers GET /v1/models: the models of the generation
// runtime (text generation, embedding GGUFs) the key may call (public ones
// and its account's private ones), by name.
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, ok := g.authKey(w, r, st)
	if !ok {
		return
	}
	if !g.catalog.Loaded() {
		w.Header()["Retry-After"] = retryAfterOne
		g.fail(w, st, http.StatusServiceUnavailable, "unavailable", "the model catalogue is not loaded yet; retry")
		return
	}
	list := customerapi.ModelList{Object: "list", Data: []customerapi.ModelInfo{}}
	for _, m := range g.catalog.Models() {
		if m.generationRuntime() && (!m.Private || m.Owner == k.AccountID) {
			list.Data = append(list.Data, customerapi.ModelInfo{ID: m.Name, Object: "model", OwnedBy: "nlpswarm"})
		}
	}
	slices.SortFunc(list.Data, func(a, b customerapi.ModelInfo) int { return strings.Compare(a.ID, b.ID) })
	st.status = http.StatusOK
	w.Header()["Content-Type"] = jsonContentType
	_ = json.NewEncoder(w).Encode(list)
}

// serveNLPGeneration serves POST /v1/{model}/generation and
// /v1/{model}/chatbot (task), NLP Cloud's bodies translated to the
// replica's /v1/completions and /v1/chat/completions and its answers back.
func (g *Gateway) serveNLPGeneration(w http.ResponseWriter, r *http.Request, model, task string) {
	st := &reqState{r: r, start: time.Now(), model: "-"}
	defer g.finish(st)
	k, m, ok := g.admit(w, r, st, model)
	if !ok {
		return
	}
	if m.Task != customerapi.TextGeneration {
		g.fail(w, st, http.StatusBadRequest, "task_not_supported", fmt.Sprintf("model %q does %s, not %s", m.Name, m.Task, task))
		return
	}
	hb, ok := g.takeBody(w, r, st, k)
	if !ok {
		return
	}
	defer hb.release()
	body := hb.body
	var call genCall
	var err error
	if task == customerapi.TaskChatbot {
		call, err = chatbotCall(body)
	} else {
		call, err = generationCall(body)
	}
	g.generateTranslated(w, r, st, k, m, call, err)
}

// generateTranslated sends call, a customer body translated for the
// replica, once the plan's token budgets allow it; err (the body could not
// be translated) is the customer's 400 instead.
func (g *Gateway) generateTranslated(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, m *Model, call genCall, err error) {
	if err != nil {
		g.usage.Record(k, m, 0, true)
		g.fail(w, st, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !g.allowTokens(w, r, st, k) {
		return
	}
	g.generate(w, r, st, k, m, call)
}

// serveGGUFEmbeddings serves POST /v1/{model}/embeddings for an embedding
// GGUF (m, admitted by serveTask): the task route's body (DecodeRequest:
// "text" or "texts") translated to the replica's /v1/embeddings (input: the
// texts) and its answer back to the task route's ({"embeddings": [v]} per
// text, as an encoder answers), its input tokens metered and charged to the
// plan's token budgets as a generation request's.
func (g *Gateway) serveGGUFEmbeddings(w http.ResponseWriter, r *http.Request, st *reqState, k *Key, m *Model) {
	hb, ok := g.takeBody(w, r, st, k)
	if !ok {
		return
	}
	defer hb.release()
	texts, single, params, err := DecodeRequest(hb.body, g.opts.MaxTexts)
	var call genCall
	switch {
	case err != nil:
	case len(params) > 0 && !isEmptyObject(params):
		err = errors.New(`"parameters" are not supported by this model (a GGUF embeddings model): leave them out`)
	default:
		call, err = embeddingsCall(texts, single)
	}
	g.generateTranslated(w, r, st, k, m, call, err)
}

// embeddingsCall translates a task route's texts to the replica's
// /v1/embeddings, and its answer (OpenAI's: data[i].embedding, by index)
// back to one embeddings answer per text.
func embeddingsCall(texts []string, single bool) (genCall, error) {
	call, err := replicaCall(customerapi.PathEmbeddings, map[string]any{"input": texts}, func(ans []byte, _ tokenUsage) ([]byte, error) {
		answers, err := embeddingsAnswers(ans, len(texts))
		if err != nil {
			return nil, err
		}
		return appendAnswers(nil, answers, single), nil
	})
	call.texts = len(texts)
	return call, err
}

// embeddingsAnswers reads an OpenAI embeddings answer of n inputs: one
// embedding per input, placed by its index.
func embeddingsAnswers(body []byte, n int) ([]any, error) {
	var a struct {
		Data []struct {
			Index     *int      `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("embeddings answer: %w", err)
	}
	if len(a.Data) != n {
		return nil, errOutputCount
	}
	out := make([]any, n)
	for i, d := range a.Data {
		at := i
		if d.Index != nil {
			at = *d.Index
		}
		if at < 0 || at >= n || out[at] != nil {
			return nil, fmt.Errorf("embeddings answer: index %d out of range or repeated", at)
		}
		if len(d.Embedding) == 0 {
			return nil, errors.New("embeddings answer: an output lacks an embedding")
		}
		out[at] = embeddingsAnswer{Embeddings: [][]float64{d.Embedding}}
	}
	return out, nil
}

// isEmptyObject: raw is null or {} (as parameters, nothing asked).
func isEmptyObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) || (json.Unmarshal(raw, &m) == nil && len(m) == 0)
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data, with the error worded for the customer.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not a JSON object of the expected shape: %s", jsonErr(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// maxGenerationLength bounds max_length (a replica's context is the real
// bound; this keeps the number sane).
const maxGenerationLength = 1 << 20

func checkSampling(maxLength *int, temperature, topP *float64, topK *int, penalty *float64) (int, error) {
	n := customerapi.DefaultMaxLength
	if maxLength != nil {
		n = *maxLength
		if n < 1 || n > maxGenerationLength {
			return 0, fmt.Errorf(`"max_length" must be between 1 and %d`, maxGenerationLength)
		}
	}
	switch {
	case temperature != nil && (*temperature < 0 || *temperature > 100):
		return 0, errors.New(`"temperature" must be between 0 and 100`)
	case topP != nil && (*topP <= 0 || *topP > 1):
		return 0, errors.New(`"top_p" must be in (0, 1]`)
	case topK != nil && *topK < 0:
		return 0, errors.New(`"top_k" must be 0 or more`)
	case penalty != nil && *penalty <= 0:
		return 0, errors.New(`"repetition_penalty" must be more than 0`)
	}
	return n, nil
}

// generationCall translates a generation body to /v1/completions.
func generationCall(body []byte) (genCall, error) {
	var req customerapi.GenerationRequest
	if err := decodeStrict(body, &req); err != nil {
		return genCall{}, err
	}
	if req.Text == "" {
		return genCall{}, errors.New(`"text" is missing or empty`)
	}
	n, err := checkSampling(req.MaxLength, req.Temperature, req.TopP, req.TopK, req.RepetitionPenalty)
	if err != nil {
		return genCall{}, err
	}
	up := map[string]any{"prompt": req.Text, "max_tokens": n, "stream": req.Stream}
	if req.EndSequence != "" {
		up["stop"] = []string{req.EndSequence}
	}
	putOpt(up, "temperature", req.Temperature)
	putOpt(up, "top_p", req.TopP)
	putOpt(up, "top_k", req.TopK)
	putOpt(up, "repeat_penalty", req.RepetitionPenalty)
	putOpt(up, "seed", req.Seed)
	var nlp *nlpStream
	if req.Stream {
		nlp = &nlpStream{generation: &req}
	}
	return streamable(nlp, up, customerapi.PathCompletions, func(ans []byte, u tokenUsage) ([]byte, error) {
		var a struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ans, &a); err != nil || len(a.Choices) == 0 {
			return nil, fmt.Errorf("completion answer without choices (%v)", err)
		}
		text := a.Choices[0].Text
		if !req.RemoveInput {
			text = req.Text + text
		}
		return json.Marshal(customerapi.GenerationAnswer{GeneratedText: text, NbGeneratedTokens: u.out, NbInputTokens: u.in})
	})
}

// chatbotCall translates a chatbot body to /v1/chat/completions: context
// as the system message, then the history's turns, then the input.
func chatbotCall(body []byte) (genCall, error) {
	var req customerapi.ChatbotRequest
	if err := decodeStrict(body, &req); err != nil {
		return genCall{}, err
	}
	if req.Input == "" {
		return genCall{}, errors.New(`"input" is missing or empty`)
	}
	n, err := checkSampling(req.MaxLength, req.Temperature, nil, nil, nil)
	if err != nil {
		return genCall{}, err
	}
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	msgs := make([]message, 0, 2+2*len(req.History))
	if req.Context != "" {
		msgs = append(msgs, message{"system", req.Context})
	}
	for _, h := range req.History {
		msgs = append(msgs, message{"user", h.Input}, message{"assistant", h.Response})
	}
	msgs = append(msgs, message{"user", req.Input})
	up := map[string]any{"messages": msgs, "max_tokens": n, "stream": req.Stream}
	putOpt(up, "temperature", req.Temperature)
	putOpt(up, "seed", req.Seed)
	var nlp *nlpStream
	if req.Stream {
		nlp = &nlpStream{chatbot: &req}
	}
	return streamable(nlp, up, customerapi.PathChatCompletions, func(ans []byte, _ tokenUsage) ([]byte, error) {
		var a struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ans, &a); err != nil || len(a.Choices) == 0 {
			return nil, fmt.Errorf("chat answer without choices (%v)", err)
		}
		resp := a.Choices[0].Message.Content
		hist := append(slices.Clip(req.History), customerapi.Exchange{Input: req.Input, Response: resp})
		return json.Marshal(customerapi.ChatbotAnswer{Response: resp, History: hist})
	})
}

// replicaCall is a whole (not streamed) request of up to the replica's
// path, its answer turned into the route's by answer.
func replicaCall(path string, up map[string]any, answer func(body []byte, u tokenUsage) ([]byte, error)) (genCall, error) {
	b, err := json.Marshal(up)
	if err != nil {
		return genCall{}, err
	}
	return genCall{path: path, body: b, answer: answer}, nil
}

// putOpt sets m[k] to *v when v is given.
func putOpt[T any](m map[string]any, k string, v *T) {
	if v != nil {
		m[k] = *v
	}
}

// refuseTokens answers a request refused by the token budgets.
func (g *Gateway) refuseTokens(w http.ResponseWriter, st *reqState, v Verdict) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((v.RetryAfter+time.Second-1)/time.Second))))
	msg := "token rate limit exceeded: the plan's tokens per minute are spent"
	if v.Reason == "token_quota_exceeded" {
		msg = "monthly token quota exhausted"
	}
	g.fail(w, st, http.StatusTooManyRequests, v.Reason, msg)
}
