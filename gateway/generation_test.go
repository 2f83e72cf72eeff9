package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest/fakellama"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/limitkeys"
)

// genModel deploys a text-generation model served by a fake replica
// (fakellama: llama-server's JSON and event streams, no model), which
// requires the model's call credential.
func (e *env) genModel(name string, owner int64) *fakellama.Server {
	e.t.Helper()
	f := fakellama.Start(callAuth(name))
	e.t.Cleanup(f.Close)
	if owner != 0 {
		e.id(`INSERT INTO models(name, task, visibility, owner_account_id) VALUES ($1,'text-generation','private',$2) RETURNING id`, name, owner)
	} else {
		e.id(`INSERT INTO models(name, task) VALUES ($1,'text-generation') RETURNING id`, name)
	}
	e.exec(`INSERT INTO deployments(model_id, version, replicas) SELECT id, 1, 1 FROM models WHERE name = $1`, name)
	e.static[name] = []string{f.Addr()}
	return f
}

// genEnv is a gateway with one public generation model "gen" and a key.
func genEnv(t *testing.T, redis bool) (*env, *fakellama.Server, string, int64) {
	return genEnvOn(t, redis, "")
}

// genEnvOn is genEnv with the upstream client upstream ("": the default).
func genEnvOn(t *testing.T, redis bool, upstream string) (*env, *fakellama.Server, string, int64) {
	e := newEnv(t, redis)
	e.upstream = upstream
	acc := e.account("acme", "")
	key, keyID := e.key(acc, "inference")
	f := e.genModel("gen", 0)
	e.start(Config{})
	return e, f, key, keyID
}

// openGenStream posts body to path with key and returns the event
// stream's reader.
func openGenStream(t *testing.T, e *env, key, path, body string) (*http.Response, *bufio.Reader) {
	t.Helper()
	return openSSE(t, e.srv.URL+path, "Bearer "+key, body)
}

// tokensOf flushes usage and reads key's usage row of model.
func (e *env) tokensOf(keyID int64, model string) (requests, in, out int64) {
	e.t.Helper()
	if err := e.gw.FlushUsage(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	err := e.db.Pool.QueryRow(context.Background(), `SELECT COALESCE(SUM(requests),0), COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0)
		FROM usage WHERE api_key_id = $1 AND model_name = $2`, keyID, model).Scan(&requests, &in, &out)
	if err != nil {
		e.t.Fatal(err)
	}
	return
}

// Whole answers of the three OpenAI routes are the replica's, the model
// chosen by the body; usage counts their tokens.
func TestGenerationWhole(t *testing.T) {
	e, f, key, keyID := genEnv(t, false)
	for _, c := range []struct{ path, body, want string }{
		{"/v1/chat/completions", `{"model":"gen","messages":[{"role":"user","content":"hi"}]}`, `"chat.completion"`},
		{"/v1/completions", `{"model":"gen","prompt":"once"}`, `"text_completion"`},
		{"/v1/embeddings", `{"model":"gen","input":"abc"}`, `"embedding"`},
	} {
		a := e.post(key, c.path, c.body)
		if a.status != 200 || !strings.Contains(a.raw, c.want) || a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %q %s", c.path, a.status, a.header.Get("Content-Type"), a.raw)
		}
		if got := string(<-f.Bodies); got != c.body {
			t.Errorf("%s: the replica got %s, want the body as it is", c.path, got)
		}
	}
	req, in, out := e.tokensOf(keyID, "gen")
	if req != 3 || in != 3*fakellama.PromptTokens || out != 2*5 {
		t.Fatalf("usage: %d requests, %d in, %d out; want 3, %d, 10", req, in, out, 3*fakellama.PromptTokens)
	}
}

// A stream is relayed event by event as the replica sends it (each event
// reaches the client while the next is not yet generated); the usage event
// the gateway asked for is kept from a client that did not ask for it, and
// its tokens are metered.
func TestGenerationStreamChunkByChunk(t *testing.T) {
	e, f, key, keyID := genEnv(t, false)
	f.Gate.Store(true)
	_, br := openGenStream(t, e, key, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if up := string(<-f.Bodies); !strings.Contains(up, `"include_usage":true`) {
		t.Fatalf("the replica was not asked for usage: %s", up)
	}
	for i := range 5 {
		f.Step <- struct{}{}
		ev := readEvent(t, br) // (within 5 s, before the next chunk exists)
		if want := "data: " + fakellama.Chunk(true, i) + "\n\n"; ev != want {
			t.Fatalf("event %d: %q, want %q", i, ev, want)
		}
	}
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), `"usage"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("the stream's end: %q (want the finish chunk and [DONE], no usage event)", rest)
	}
	if req, in, out := e.tokensOf(keyID, "gen"); req != 1 || in != fakellama.PromptTokens || out != 5 {
		t.Fatalf("usage: %d requests, %d in, %d out", req, in, out)
	}
}

// A client that asks for the usage event gets it, the body unchanged.
func TestGenerationStreamIncludeUsage(t *testing.T) {
	e, f, key, _ := genEnv(t, false)
	body := `{"model":"gen","stream":true,"stream_options":{"include_usage":true},"prompt":"once"}`
	_, br := openGenStream(t, e, key, "/v1/completions", body)
	if up := string(<-f.Bodies); up != body {
		t.Fatalf("the replica got %s", up)
	}
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), `"choices":[],"usage":{"prompt_tokens":7`) {
		t.Fatalf("no usage event: %q", rest)
	}
}

// A client that disconnects in the middle of a stream ends the replica's
// request (the generation stops there).
func TestGenerationStreamDisconnectCancels(t *testing.T) {
	e, f, key, keyID := genEnv(t, false)
	f.Gate.Store(true)
	resp, br := openGenStream(t, e, key, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[]}`)
	f.Step <- struct{}{}
	readEvent(t, br)
	resp.Body.Close()
	select {
	case <-f.Gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the replica's stream went on after the client left")
	}
	// (the handler meters the stream once it has ended, which may be after
	// the replica saw its request end)
	var req, out int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if req, _, out = e.tokensOf(keyID, "gen"); out > 0 {
			break
		}
	}
	if req != 1 || out != 1 {
		t.Errorf("usage of a stream cut short: %d requests, %d output tokens (want 1, 1: its content events)", req, out)
	}
}

// A replica failing in the middle of a stream: the client gets what came,
// then an error event, and the stream ends.
func TestGenerationStreamUpstreamError(t *testing.T) {
	eachUpstream(t, testGenerationStreamUpstreamError)
}

func testGenerationStreamUpstreamError(t *testing.T, upstream string) {
	e, f, key, _ := genEnvOn(t, false, upstream)
	f.FailAfter.Store(2)
	_, br := openGenStream(t, e, key, "/v1/completions", `{"model":"gen","stream":true,"prompt":"x"}`)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the stream did not end cleanly: %v (%q)", err, rest)
	}
	want := "data: " + fakellama.Chunk(false, 0) + "\n\ndata: " + fakellama.Chunk(false, 1) + "\n\n" +
		`data: {"error":{"code":"upstream_error","message":"the model runtime's stream failed"}}` + "\n\n"
	if string(rest) != want {
		t.Fatalf("stream %q\nwant %q", rest, want)
	}
}

// The errors before a stream starts are the API's JSON errors.
func TestGenerationAdmission(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, _ := e.key(acc, "inference")
	other := e.account("other", "")
	e.genModel("gen", 0)
	f := e.genModel("mine", acc)
	e.genModel("theirs", other)
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	for _, c := range []struct {
		key, path, body string
		status          int
		code            string
	}{
		{"", "/v1/chat/completions", `{"model":"gen"}`, 401, "unauthorized"},
		{key, "/v1/chat/completions", `{"messages":[]}`, 400, "invalid_request"},
		{key, "/v1/chat/completions", `[1]`, 400, "invalid_request"},
		{key, "/v1/chat/completions", `{"model":"gen","stream":"yes"}`, 400, "invalid_request"},
		{key, "/v1/completions", `{"model":"nope","prompt":"x"}`, 404, "model_not_found"},
		{key, "/v1/completions", `{"model":"theirs","prompt":"x"}`, 404, "model_not_found"},
		{key, "/v1/completions", `{"model":"sentiment","prompt":"x"}`, 400, "task_not_supported"},
		{key, "/v1/sentiment/generation", `{"text":"x"}`, 400, "task_not_supported"},
		{key, "/v1/gen/sentiment", `{"text":"x"}`, 400, "task_not_supported"},
		{key, "/v1/gen/generation", `{"text":""}`, 400, "invalid_request"},
		{key, "/v1/gen/generation", `{"text":"x","max_length":0}`, 400, "invalid_request"},
		{key, "/v1/gen/generation", `{"text":"x","unknown":1}`, 400, "invalid_request"},
		{key, "/v1/gen/chatbot", `{"history":[]}`, 400, "invalid_request"},
		{key, "/v1/mine/generation", `{"text":"x"}`, 200, ""},
		{key, "/v1/completions", `{"model":"mine","prompt":"x"}`, 200, ""},
	} {
		a := e.post(c.key, c.path, c.body)
		if a.status != c.status || a.code() != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.path, c.body, a.status, a.raw, c.status, c.code)
		}
	}
	f.Status.Store(400)
	if a := e.post(key, "/v1/completions", `{"model":"mine","prompt":"x"}`); a.status != 400 || a.code() != "model_rejected_input" || !strings.Contains(a.raw, "forced by the test") {
		t.Errorf("a replica's 400: %d %s", a.status, a.raw)
	}
	f.Status.Store(500)
	if a := e.post(key, "/v1/completions", `{"model":"mine","prompt":"x","stream":true}`); a.status != 502 || a.code() != "upstream_error" {
		t.Errorf("a replica's 500 before the stream: %d %s", a.status, a.raw)
	}
}

// NLP Cloud's generation and chatbot bodies become the replica's
// completions and chat, and their answers NLP Cloud's.
func TestGenerationNLPCloud(t *testing.T) {
	e, f, key, keyID := genEnv(t, false)
	a := e.post(key, "/v1/gen/generation", `{"text":"Once","max_length":5,"end_sequence":".","temperature":0,"seed":3}`)
	if a.status != 200 || a.raw != `{"generated_text":"Oncetok tok tok tok tok ","nb_generated_tokens":5,"nb_input_tokens":7}` {
		t.Fatalf("generation: %d %s", a.status, a.raw)
	}
	var up map[string]any
	_ = json.Unmarshal(<-f.Bodies, &up)
	if up["prompt"] != "Once" || up["max_tokens"] != 5.0 || up["temperature"] != 0.0 || up["seed"] != 3.0 || up["stream"] != false {
		t.Errorf("completion request %v", up)
	}
	if stop, _ := up["stop"].([]any); len(stop) != 1 || stop[0] != "." {
		t.Errorf("stop %v", up["stop"])
	}
	if a := e.post(key, "/v1/gen/generation", `{"text":"Once","remove_input":true}`); a.status != 200 || !strings.HasPrefix(a.raw, `{"generated_text":"tok `) {
		t.Fatalf("remove_input: %d %s", a.status, a.raw)
	}
	<-f.Bodies
	a = e.post(key, "/v1/gen/chatbot", `{"input":"and now?","context":"a helper","history":[{"input":"hi","response":"hello"}]}`)
	if a.status != 200 || a.raw != `{"response":"tok tok tok tok tok ","history":[{"input":"hi","response":"hello"},{"input":"and now?","response":"tok tok tok tok tok "}]}` {
		t.Fatalf("chatbot: %d %s", a.status, a.raw)
	}
	var chat struct {
		Messages []struct{ Role, Content string }
	}
	_ = json.Unmarshal(<-f.Bodies, &chat)
	if got, _ := json.Marshal(chat.Messages); string(got) != `[{"Role":"system","Content":"a helper"},{"Role":"user","Content":"hi"},{"Role":"assistant","Content":"hello"},{"Role":"user","Content":"and now?"}]` {
		t.Errorf("chat messages %s", got)
	}
	if req, in, out := e.tokensOf(keyID, "gen"); req != 3 || in != 21 || out != 15 {
		t.Fatalf("usage: %d requests, %d in, %d out", req, in, out)
	}
}

// GET /v1/models lists the generation models the key may call.
func TestGenerationModels(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, _ := e.key(acc, "inference")
	e.genModel("gen", 0)
	e.genModel("mine", acc)
	e.genModel("theirs", e.account("other", ""))
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	want := `{"object":"list","data":[{"id":"gen","object":"model","created":0,"owned_by":"nlpswarm"},{"id":"mine","object":"model","created":0,"owned_by":"nlpswarm"}]}` + "\n"
	if resp.StatusCode != 200 || string(raw) != want {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	if a := e.get("", "/v1/models"); a.status != 401 {
		t.Fatalf("without a key: %d", a.status)
	}
}

func (e *env) get(key, path string) answer {
	e.t.Helper()
	return e.call(http.MethodGet, key, path, "")
}

// Plans limit tokens per minute and per month: a request is admitted while
// the key is under its budgets, its tokens charged once its usage is known
// (streams included), and the next one refused with 429 and Retry-After.
func TestGenerationTokenLimits(t *testing.T) {
	e := newEnv(t, true)
	perMin := e.id(`INSERT INTO plans(name, requests_per_second, burst, tokens_per_minute) VALUES ('tpm', 100, 100, 20) RETURNING id`)
	perMonth := e.id(`INSERT INTO plans(name, requests_per_second, burst, tokens_per_month) VALUES ('tpmonth', 100, 100, 12) RETURNING id`)
	a1, a2 := e.account("a1", ""), e.account("a2", "")
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, perMin, a1)
	e.exec(`UPDATE accounts SET plan_id = $1 WHERE id = $2`, perMonth, a2)
	k1, id1 := e.key(a1, "inference")
	k2, id2 := e.key(a2, "inference")
	free, _ := e.key(e.account("big", "standard"), "inference")
	e.genModel("gen", 0)
	e.start(Config{})
	// 12 tokens an answer: a 20-token minute admits two, then refuses
	for range 2 {
		_, br := openGenStream(t, e, k1, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[]}`)
		_, _ = io.ReadAll(br)
	}
	a := e.post(k1, "/v1/chat/completions", `{"model":"gen","messages":[]}`)
	if a.status == 200 { // (the minute turned between the requests: once more)
		a = e.post(k1, "/v1/chat/completions", `{"model":"gen","messages":[]}`)
	}
	ra, _ := strconv.Atoi(a.header.Get("Retry-After"))
	if a.status != 429 || a.code() != "token_rate_limited" || ra < 1 || ra > 60 {
		t.Fatalf("over the minute's tokens: %d %s Retry-After %q", a.status, a.raw, a.header.Get("Retry-After"))
	}
	if n, _ := e.rdb.Get(context.Background(), limitkeys.TokenMinuteKey(e.prefix, id1, limitkeys.Minute(time.Now()))).Int64(); n < 12 {
		t.Errorf("the minute's count in Redis: %d", n)
	}
	// a 12-token month: one answer, then refused until next month
	if a := e.post(k2, "/v1/gen/generation", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("first: %d %s", a.status, a.raw)
	}
	a = e.post(k2, "/v1/gen/generation", `{"text":"x"}`)
	if a.status != 429 || a.code() != "token_quota_exceeded" || a.header.Get("Retry-After") == "" {
		t.Fatalf("over the month's tokens: %d %s", a.status, a.raw)
	}
	if n, _ := e.rdb.Get(context.Background(), limitkeys.TokenMonthKey(e.prefix, id2, limitkeys.Month(time.Now()))).Int64(); n != 12 {
		t.Errorf("the month's count in Redis: %d, want 12", n)
	}
	// a plan without token budgets is not counted
	for range 3 {
		if a := e.post(free, "/v1/gen/generation", `{"text":"x"}`); a.status != 200 {
			t.Fatalf("no budget: %d %s", a.status, a.raw)
		}
	}
	// the month's count lost in Redis is seeded from usage
	e.rdb.Del(context.Background(), limitkeys.TokenMonthKey(e.prefix, id2, limitkeys.Month(time.Now())))
	if _, _, out := e.tokensOf(id2, "gen"); out != 5 {
		t.Fatalf("usage out %d", out)
	}
	if a := e.post(k2, "/v1/gen/generation", `{"text":"x"}`); a.status != 429 || a.code() != "token_quota_exceeded" {
		t.Fatalf("after Redis lost the count: %d %s (want it seeded from usage)", a.status, a.raw)
	}
}

func TestTokenDecision(t *testing.T) {
	now := time.Date(2026, 12, 31, 23, 59, 45, 0, time.UTC)
	for _, c := range []struct {
		name                               string
		minute, month, perMinute, perMonth int64
		reason                             string
		retry                              time.Duration
	}{
		{"no budgets", 1e9, 1e9, 0, 0, "", 0},
		{"under both", 9, 99, 10, 100, "", 0},
		{"minute spent", 10, 99, 10, 100, "token_rate_limited", 15 * time.Second},
		{"minute overspent by the last answer", 400, 0, 10, 0, "token_rate_limited", 15 * time.Second},
		{"month spent: until the next UTC month", 0, 100, 10, 100, "token_quota_exceeded", 15 * time.Second},
		{"month spent wins over the minute", 10, 100, 10, 100, "token_quota_exceeded", 15 * time.Second},
	} {
		v := tokenDecision(now, c.minute, c.month, c.perMinute, c.perMonth)
		if v.Allowed != (c.reason == "") || v.Reason != c.reason || v.RetryAfter != c.retry {
			t.Errorf("%s: %+v", c.name, v)
		}
	}
	mid := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	if v := tokenDecision(mid, 0, 5, 0, 5); v.RetryAfter != (15*24+12)*time.Hour {
		t.Errorf("mid-June: Retry-After %v, want until July 1st", v.RetryAfter)
	}
}

func TestScanEvents(t *testing.T) {
	chunk := "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	usageEv := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n"
	lastWithUsage := "data: {\"choices\":[{\"text\":\"\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n"
	for _, c := range []struct {
		name, in string
		strip    bool
		out      string
		u        tokenUsage
		events   int64
	}{
		{"content passes as it is", chunk + chunk, true, chunk + chunk, tokenUsage{}, 2},
		{"the usage event stripped", chunk + usageEv + "data: [DONE]\n\n", true, chunk + "data: [DONE]\n\n", tokenUsage{3, 4, true}, 1},
		{"the usage event kept when asked for", chunk + usageEv, false, chunk + usageEv, tokenUsage{3, 4, true}, 1},
		{"usage on a content event is never stripped", lastWithUsage, true, lastWithUsage, tokenUsage{3, 5, true}, 0},
		{"CRLF events", strings.ReplaceAll(usageEv, "\n", "\r\n"), true, "", tokenUsage{3, 4, true}, 0},
		{"a content text saying usage", "data: {\"choices\":[{\"text\":\"\\\"usage\\\"\"}]}\n\n", true, "data: {\"choices\":[{\"text\":\"\\\"usage\\\"\"}]}\n\n", tokenUsage{}, 1},
	} {
		var u tokenUsage
		var n int64
		out := scanEvents(nil, []byte(c.in), c.strip, &u, &n)
		if string(out) != c.out || u != c.u || n != c.events {
			t.Errorf("%s: %q %+v %d", c.name, out, u, n)
		}
	}
	for _, c := range []struct {
		in   string
		want int
	}{{"", 0}, {"data: x", 0}, {"data: x\n\n", 9}, {"data: x\n\ndata: y", 9}, {"data: x\r\n\r\ndata: y\n", 11}} {
		if got := eventsEnd([]byte(c.in)); got != c.want {
			t.Errorf("eventsEnd(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestWithIncludeUsage(t *testing.T) {
	for _, in := range []string{
		`{"model":"m","stream":true}`, ` { "model" : "m" } `,
		`{"model":"m","stream_options":null}`, `{"model":"m","stream_options":{"include_usage":false,"x":1}}`,
	} {
		h, _, err := decodeGenHead([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		out, err := withIncludeUsage([]byte(in), h)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		_, inc, err := decodeGenHead(out)
		if err != nil || !inc || !json.Valid(out) {
			t.Errorf("%s -> %s: include_usage %v, %v", in, out, inc, err)
		}
	}
}

// A stream read to its end leaves its connection to the replica for the
// next request (no dial before the next first token); one cut short by
// its client does not.
func TestGenerationStreamReusesConnection(t *testing.T) {
	eachUpstream(t, testGenerationStreamReusesConnection)
}

func testGenerationStreamReusesConnection(t *testing.T, upstream string) {
	e, f, key, _ := genEnvOn(t, false, upstream)
	for range 3 {
		_, br := openGenStream(t, e, key, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[]}`)
		if rest, _ := io.ReadAll(br); !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
			t.Fatalf("stream %q", rest)
		}
	}
	if n := f.Conns.Load(); n != 1 {
		t.Errorf("3 streams read to their end took %d connections to the replica, want 1", n)
	}
	f.Gate.Store(true)
	resp, br := openGenStream(t, e, key, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[]}`)
	f.Step <- struct{}{}
	readEvent(t, br)
	resp.Body.Close()
	<-f.Gone
	f.Gate.Store(false)
	_, br = openGenStream(t, e, key, "/v1/chat/completions", `{"model":"gen","stream":true,"messages":[]}`)
	_, _ = io.ReadAll(br)
	if n := f.Conns.Load(); n != 2 {
		t.Errorf("after a stream cut short: %d connections, want 2 (the cut one closed)", n)
	}
}

// NLP Cloud's routes stream with "stream": true: each piece of the answer
// as the replica generates it (the replica asked for a stream with its
// usage event), then the whole answer, the JSON a request without stream
// gets, then [DONE]; usage counts the stream's tokens.
func TestGenerationNLPCloudStream(t *testing.T) {
	e, f, key, keyID := genEnv(t, false)
	f.Gate.Store(true)
	_, br := openGenStream(t, e, key, "/v1/gen/generation", `{"text":"Once","max_length":5,"stream":true}`)
	var up map[string]any
	_ = json.Unmarshal(<-f.Bodies, &up)
	if up["stream"] != true || up["prompt"] != "Once" {
		t.Fatalf("completion request %v", up)
	}
	if so, _ := up["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Fatalf("the replica was not asked for usage: %v", up)
	}
	for i := range 5 {
		f.Step <- struct{}{}
		if ev, want := readEvent(t, br), "data: {\"generated_text\":\"tok"+strconv.Itoa(i)+" \"}\n\n"; ev != want {
			t.Fatalf("event %d: %q, want %q", i, ev, want)
		}
	}
	rest, _ := io.ReadAll(br)
	if want := "data: {\"generated_text\":\"Oncetok0 tok1 tok2 tok3 tok4 \",\"nb_generated_tokens\":5,\"nb_input_tokens\":7}\n\ndata: [DONE]\n\n"; string(rest) != want {
		t.Fatalf("the stream's end: %q, want %q", rest, want)
	}
	f.Gate.Store(false)
	_, br = openGenStream(t, e, key, "/v1/gen/chatbot", `{"input":"and now?","history":[{"input":"hi","response":"hello"}],"stream":true}`)
	<-f.Bodies
	all, _ := io.ReadAll(br)
	if !strings.HasPrefix(string(all), "data: {\"response\":\"tok0 \"}\n\n") ||
		!strings.HasSuffix(string(all), "data: {\"response\":\"tok0 tok1 tok2 tok3 tok4 \",\"history\":[{\"input\":\"hi\",\"response\":\"hello\"},{\"input\":\"and now?\",\"response\":\"tok0 tok1 tok2 tok3 tok4 \"}]}\n\ndata: [DONE]\n\n") {
		t.Fatalf("chatbot stream: %q", all)
	}
	if req, in, out := e.tokensOf(keyID, "gen"); req != 2 || in != 14 || out != 10 {
		t.Fatalf("usage: %d requests, %d in, %d out", req, in, out)
	}
}

// A replica failing in the middle of an NLP Cloud stream ends it with the
// customer API's error event, and no whole answer.
func TestGenerationNLPCloudStreamFails(t *testing.T) {
	e, f, key, _ := genEnv(t, false)
	f.FailAfter.Store(2)
	_, br := openGenStream(t, e, key, "/v1/gen/generation", `{"text":"Once","stream":true}`)
	all, _ := io.ReadAll(br)
	if !strings.HasPrefix(string(all), "data: {\"generated_text\":\"tok0 \"}\n\ndata: {\"generated_text\":\"tok1 \"}\n\n") ||
		!strings.Contains(string(all), `"code":"upstream_error"`) || strings.Contains(string(all), "[DONE]") {
		t.Fatalf("stream: %q", all)
	}
}

// The NLP Cloud stream conversion on its own: keep-alives and role events
// pass nothing, a replica's error event becomes ours and ends the answer,
// and an end without [DONE] still gives the whole answer once.
func TestNLPStreamScan(t *testing.T) {
	s := &nlpStream{generation: &customerapi.GenerationRequest{Text: "P", RemoveInput: true}}
	var u tokenUsage
	var events int64
	out := s.scan(nil, []byte(": keep-alive\n\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: not json\n\n"), &u, &events)
	if string(out) != "data: {\"generated_text\":\"a\"}\n\n" || events != 1 {
		t.Fatalf("%q %d", out, events)
	}
	out = s.finish(nil, estimate(u, events))
	if string(out) != "data: {\"generated_text\":\"a\",\"nb_generated_tokens\":1,\"nb_input_tokens\":0}\n\ndata: [DONE]\n\n" {
		t.Fatalf("%q", out)
	}
	if out = s.finish(nil, u); len(out) != 0 {
		t.Fatalf("finished twice: %q", out)
	}
	s = &nlpStream{chatbot: &customerapi.ChatbotRequest{Input: "q"}}
	out = s.scan(nil, []byte("data: {\"error\":{\"code\":500,\"message\":\"boom\"}}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n"), &u, &events)
	if !strings.Contains(string(out), `"upstream_error"`) || strings.Contains(string(out), "late") || strings.Contains(string(out), "boom") {
		t.Fatalf("%q", out)
	}
	if out = s.finish(nil, u); len(out) != 0 {
		t.Fatalf("a failed stream got a whole answer: %q", out)
	}
}

// A stream lasts as long as its tokens take: the model's timeout bounds
// the wait for its head and then each wait for more of it, not the whole
// stream (a generation's answer may take minutes). A replica silent for
// longer than that ends the stream with an error event.
func TestGenerationStreamOutlivesTimeout(t *testing.T) {
	eachUpstream(t, testGenerationStreamOutlivesTimeout)
}

func testGenerationStreamOutlivesTimeout(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	acc := e.account("acme", "")
	key, _ := e.key(acc, "inference")
	f := e.genModel("gen", 0)
	e.start(Config{Timeout: 600 * time.Millisecond})
	f.Gate.Store(true)
	_, br := openGenStream(t, e, key, "/v1/completions", `{"model":"gen","stream":true,"prompt":"x"}`)
	<-f.Bodies
	for i := range 5 { // 5 × 250 ms: twice the timeout in all, each wait well under it
		time.Sleep(250 * time.Millisecond)
		select {
		case f.Step <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatalf("the replica's stream was ended before chunk %d (cut at the model's timeout?)", i)
		}
		if ev, want := readEvent(t, br), "data: "+fakellama.Chunk(false, i)+"\n\n"; ev != want {
			t.Fatalf("event %d: %q, want %q", i, ev, want)
		}
	}
	if rest, _ := io.ReadAll(br); !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("the stream's end: %q", rest)
	}

	_, br = openGenStream(t, e, key, "/v1/completions", `{"model":"gen","stream":true,"prompt":"x"}`)
	<-f.Bodies
	f.Step <- struct{}{}
	readEvent(t, br)
	start := time.Now() // then nothing: the replica hangs
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), `"code":"upstream_error"`) {
		t.Fatalf("a silent replica's stream ended with %q", rest)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("the silent stream ended after %s, want about the 600 ms timeout", d)
	}
}
