package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

func TestTasks(t *testing.T) { eachUpstream(t, testTasks) }

func testTasks(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	acc := e.account("acme", "standard")
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.model("ner", "token-classification", 0, newRuntime(t, "token-classification"))
	e.model("embed", "feature-extraction", 0, newRuntime(t, "feature-extraction"))
	e.model("asleep", "text-classification", 0) // deployed, no replica found
	e.exec(`INSERT INTO models(name, task) VALUES ('undeployed', 'text-classification')`)
	e.start(Config{})

	tests := []struct {
		path, body string
		status     int
		want       string // JSON the answer must equal, or error code
	}{
		{"/v1/sentiment/sentiment", `{"text":"great"}`, 200, `{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]}`},
		{"/v1/sentiment/classification", `{"texts":["a","b"]}`, 200, `{"results":[{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]},{"scored_labels":[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]}]}`},
		{"/v1/ner/entities", `{"text":"Alice went home"}`, 200, `{"entities":[{"text":"Alice","type":"PER","start":0,"end":5,"score":0.99}]}`},
		{"/v1/embed/embeddings", `{"text":"abcd"}`, 200, `{"embeddings":[[0.1,0.2,4]]}`},
		{"/v1/embed/embeddings", `{"texts":["a","ab"]}`, 200, `{"results":[{"embeddings":[[0.1,0.2,1]]},{"embeddings":[[0.1,0.2,2]]}]}`},
		{"/v1/sentiment/entities", `{"text":"x"}`, 400, "task_not_supported"},
		{"/v1/ner/sentiment", `{"text":"x"}`, 400, "task_not_supported"},
		{"/v1/sentiment/translate", `{"text":"x"}`, 404, "not_found"},
		{"/v1/nope/sentiment", `{"text":"x"}`, 404, "model_not_found"},
		{"/v1/undeployed/sentiment", `{"text":"x"}`, 404, "model_not_found"},
		{"/v1/asleep/sentiment", `{"text":"x"}`, 503, "no_replica"},
		{"/v1/sentiment/sentiment", `{"text":""}`, 400, "invalid_request"},
		{"/v1/sentiment/sentiment", `{"texts":[]}`, 400, "invalid_request"},
		{"/v1/sentiment/sentiment", `{"text":"a","texts":["b"]}`, 400, "invalid_request"},
		{"/v1/sentiment/sentiment", `not json`, 400, "invalid_request"},
		{"/v1/sentiment/sentiment", `{"text":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "payload_too_large"},
	}
	for _, tt := range tests {
		a := e.post(key, tt.path, tt.body)
		if a.status != tt.status {
			t.Errorf("%s %.40s: status %d, want %d (%s)", tt.path, tt.body, a.status, tt.status, a.raw)
			continue
		}
		if tt.status == 200 {
			var got, want any
			json.Unmarshal([]byte(a.raw), &got)
			json.Unmarshal([]byte(tt.want), &want)
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Errorf("%s: got %s\nwant %s", tt.path, gb, wb)
			}
		} else if a.code() != tt.want {
			t.Errorf("%s: code %q, want %q (%s)", tt.path, a.code(), tt.want, a.raw)
		}
		if tt.status == 503 && a.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tt.path)
		}
		if a.header.Get("X-Request-ID") == "" {
			t.Errorf("%s: no X-Request-ID", tt.path)
		}
	}
}

func TestInferPassThroughAndRequestID(t *testing.T) {
	eachUpstream(t, testInferPassThroughAndRequestID)
}

func testInferPassThroughAndRequestID(t *testing.T, upstream string) {
	e := newEnv(t, false)
	e.upstream = upstream
	key, _ := e.key(e.account("acme", ""), "inference")
	rt := newRuntime(t, "text-classification")
	e.model("sentiment", "text-classification", 0, rt)
	e.start(Config{})
	a := e.post(key, "/v2/models/sentiment/infer", `{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["hi"]}]}`)
	if a.status != 200 || a.body["model_name"] != "sentiment" || !strings.Contains(a.raw, `"outputs":[{`) || !strings.Contains(a.raw, `POSITIVE`) {
		t.Fatalf("infer: %d %s", a.status, a.raw)
	}
	req := `{"text":"x"}`
	a = e.post(key, "/v1/sentiment/sentiment", req)
	if rid := a.header.Get("X-Request-ID"); rid == "" || rt.lastRID.Load() != rid {
		t.Fatalf("request id %q not passed upstream (%v)", rid, rt.lastRID.Load())
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, false)
	acme := e.account("acme", "standard")
	other := e.account("other", "standard")
	acmeKey, acmeKeyID := e.key(acme, "inference")
	otherKey, _ := e.key(other, "inference")
	adminKey, _ := e.key(acme, "admin")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	e.model("secret", "text-classification", acme, newRuntime(t, "text-classification"))
	e.start(Config{})

	if a := e.post("", "/v1/public/sentiment", `{"text":"x"}`); a.status != 401 || a.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: %d", a.status)
	}
	if a := e.post("nlp_abcdefgh_"+strings.Repeat("a", 32), "/v1/public/sentiment", `{"text":"x"}`); a.status != 401 {
		t.Fatalf("unknown key: %d", a.status)
	}
	if a := e.post("garbage", "/v1/public/sentiment", `{"text":"x"}`); a.status != 401 {
		t.Fatalf("malformed key: %d", a.status)
	}
	// Bearer works too.
	for _, k := range []string{acmeKey, otherKey, adminKey} {
		a := e.post(k, "/v1/public/sentiment", `{"text":"x"}`)
		if a.status != 200 {
			t.Fatalf("public model: %d %s", a.status, a.raw)
		}
	}
	// Tenant isolation: a private model answers only its owner's keys; others get 404.
	if a := e.post(acmeKey, "/v1/secret/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("owner on private model: %d %s", a.status, a.raw)
	}
	for _, path := range []string{"/v1/secret/sentiment", "/v2/models/secret/infer"} {
		if a := e.post(otherKey, path, `{"text":"x"}`); a.status != 404 || a.code() != "model_not_found" {
			t.Fatalf("other tenant on private model %s: %d %s", path, a.status, a.raw)
		}
	}
	// Revocation bites within 5 s.
	e.exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, acmeKeyID)
	start := time.Now()
	for {
		a := e.post(acmeKey, "/v1/public/sentiment", `{"text":"x"}`)
		if a.status == 401 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("revoked key still accepted after %s", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("revocation took effect after %s", time.Since(start).Round(time.Millisecond))
}

func TestBearerScheme(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{})
	a := e.post("", "/v1/public/sentiment", `{"text":"x"}`)
	if a.status != 401 {
		t.Fatal(a.status)
	}
	req := strings.NewReader(`{"text":"x"}`)
	r, _ := newReq(e.srv.URL+"/v1/public/sentiment", req)
	r.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(r)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestCatalogueRefresh(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", ""), "inference")
	rt := newRuntime(t, "text-classification")
	id := e.model("sentiment", "text-classification", 0, rt)
	e.start(Config{CatalogRefresh: 200 * time.Millisecond})
	if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatal(a.status)
	}
	e.exec(`UPDATE deployments SET replicas = 0 WHERE model_id = $1`, id)
	deadline := time.Now().Add(3 * time.Second)
	for e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`).status != 404 {
		if time.Now().After(deadline) {
			t.Fatal("scaled-to-zero model still routed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = context.Background()
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsCarryRequestIDNotKeys(t *testing.T) {
	e := newEnv(t, false)
	var buf syncBuffer
	e.log = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	key, _ := e.key(e.account("acme", ""), "inference")
	bad := "nlp_zzzzzzzz_" + strings.Repeat("q", 32)
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.model("down", "text-classification", 0)
	e.static["down"] = []string{deadAddr(t)}
	e.start(Config{})
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/sentiment/sentiment", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Authorization", "Token "+key)
	req.Header.Set("X-Request-ID", "rid-from-client-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Request-ID") != "rid-from-client-42" {
		t.Fatal("incoming request id not echoed")
	}
	e.post(bad, "/v1/sentiment/sentiment", `{"text":"x"}`)
	e.post(key, "/v1/down/sentiment", `{"text":"x"}`)
	logs := buf.String()
	if !strings.Contains(logs, "rid-from-client-42") {
		t.Fatalf("request id not logged:\n%s", logs)
	}
	for _, secret := range []string{key[13:], bad[13:]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs hold key material:\n%s", logs)
		}
	}
	if !strings.Contains(logs, `"upstream_error"`) && !strings.Contains(logs, `"status":502`) {
		t.Fatalf("upstream failure not logged:\n%s", logs)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, n := range []string{"nlpswarm_gateway_requests_total", "nlpswarm_gateway_request_duration_seconds",
		"nlpswarm_gateway_added_latency_seconds", "nlpswarm_gateway_upstream_errors_total",
		"nlpswarm_gateway_inflight_requests", "nlpswarm_gateway_replicas"} {
		if !have[n] {
			t.Errorf("metric %s missing", n)
		}
	}
}

func TestCatalogueFollowsNotify(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", ""), "inference")
	rt := newRuntime(t, "text-classification")
	e.model("sentiment", "text-classification", 0, rt)
	e.start(Config{CatalogRefresh: time.Hour})
	if a := e.post(key, "/v1/late/sentiment", `{"text":"x"}`); a.status != 404 {
		t.Fatal(a.status)
	}
	time.Sleep(200 * time.Millisecond) // let the listener start
	id := e.model("late", "text-classification", 0, rt)
	e.exec(`SELECT pg_notify($1, 'late')`, deployment.Channel)
	deadline := time.Now().Add(2 * time.Second)
	for e.post(key, "/v1/late/sentiment", `{"text":"x"}`).status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("new deployment not routed after NOTIFY")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = id
}

func TestTranslateMalformed(t *testing.T) {
	for _, c := range []struct{ task, body string }{
		{"text-classification", `{"outputs":[]}`},
		{"text-classification", `{"outputs":[{"label":"x"}]}`},
		{"text-classification", `not json`},
		{"token-classification", `{"outputs":[[{"start":"zero"}]]}`},
		{"feature-extraction", `{"outputs":[{}]}`},
		{"feature-extraction", `{"outputs":[{"embedding":"x"}]}`},
		{"translation", `{"outputs":[[]]}`},
	} {
		if _, err := translateAll(c.task, []byte(c.body), []string{"x"}); err == nil {
			t.Errorf("%s %s: accepted", c.task, c.body)
		}
	}
	// Non-ASCII text: entity text comes from the runtime's word, not byte offsets.
	out, err := translateAll("token-classification", []byte(`{"outputs":[[{"entity_group":"LOC","word":"Montréal","start":3,"end":11,"score":0.9}]]}`), []string{"à Montréal"})
	if err != nil || out[0].(entitiesAnswer).Entities[0].Text != "Montréal" {
		t.Fatalf("%v %+v", err, out)
	}
}

func TestKnownKeysSurvivePostgresOutage(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", ""), "inference")
	other, _ := e.key(e.account("other", ""), "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.start(Config{KeyCacheTTL: 100 * time.Millisecond})
	if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatal(a.status)
	}
	// Postgres gone: the database refuses connections and the open ones are cut.
	name := e.db.URL[strings.LastIndex(e.db.URL, "/")+1:]
	if i := strings.IndexByte(name, '?'); i >= 0 {
		name = name[:i]
	}
	admin, err := pgx.Connect(context.Background(), pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{"ALTER DATABASE " + name + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "'"} {
		if _, err := admin.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if a := e.post(key, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("known key during outage: %d %s", a.status, a.raw)
	}
	if a := e.post(other, "/v1/sentiment/sentiment", `{"text":"x"}`); a.status != 503 {
		t.Fatalf("key never seen, during outage: %d %s", a.status, a.raw)
	}
}

// Generated request IDs are 32 hex digits, valid as IDs, and distinct.
func TestNewRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if len(id) != 32 || !validRequestID(id) || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("request ID %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

// ServeHTTP's own routing of the two customer routes answers as the
// ServeMux behind it does, for plain paths and for the odd ones it leaves
// to the mux.
func TestFastRoutesMatchMux(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "standard")
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{})
	for _, path := range []string{
		"/v1/sentiment/sentiment", "/v1/sentiment/translate", "/v1/nope/sentiment", "/v1/sentiment/sentiment/",
		"/v1//sentiment", "/v1/sentiment/", "/v1/sentiment", "/v1/./sentiment", "/v1/../v1/sentiment/sentiment",
		"/v1/sent%69ment/sentiment", "/v1/a%2Fb/sentiment", "/v2/models/sentiment/infer", "/v2/models//infer",
		"/v2/models/a/b/infer", "/v2/models/sentiment/infer/", "/v2/models/nope/infer",
		"/v1/chat/completions", "/v1/chat/completions/", "/v1/sentiment/generation", "/v1/sentiment/chatbot", "/v1/chat/chatbot",
		"/v1/completions", "/v1/embeddings", "/v1/models",
	} {
		for _, method := range []string{"POST", "GET"} {
			run := func(h http.Handler) (int, string) {
				req := httptest.NewRequest(method, "http://gw"+path, strings.NewReader(`{"text":"x"}`))
				req.Header.Set("Authorization", "Token "+key)
				req.Header.Set("X-Request-ID", "same")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				return w.Code, w.Body.String() + w.Header().Get("Location") + w.Header().Get("Allow")
			}
			fastStatus, fastBody := run(g)
			muxStatus, muxBody := run(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["X-Request-Id"] = []string{"same"}
				g.mux.ServeHTTP(w, r)
			}))
			if fastStatus != muxStatus || fastBody != muxBody {
				t.Errorf("%s %s: routed %d %q, the mux answers %d %q", method, path, fastStatus, fastBody, muxStatus, muxBody)
			}
		}
	}
}
