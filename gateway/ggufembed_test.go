package gateway

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest/fakellama"
)

// ggufEmbModel deploys an embedding GGUF (issue 15: task
// feature-extraction, the deployment's format gguf) served by a fake
// generation replica in embeddings mode.
func (e *env) ggufEmbModel(name string) *fakellama.Server {
	e.t.Helper()
	f := fakellama.Start(callAuth(name))
	e.t.Cleanup(f.Close)
	e.id(`INSERT INTO models(name, task) VALUES ($1,'feature-extraction') RETURNING id`, name)
	e.exec(`INSERT INTO deployments(model_id, version, replicas, format) SELECT id, 1, 1, 'gguf' FROM models WHERE name = $1`, name)
	e.static[name] = []string{f.Addr()}
	return f
}

// ggufEmbEnv is a gateway with an embedding GGUF "gemb", an ONNX encoder
// "embed" of the same task, a text-generation model "gen", and a key.
func ggufEmbEnv(t *testing.T) (*env, *fakellama.Server, *testRuntime, string, int64) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, keyID := e.key(acc, "inference")
	f := e.ggufEmbModel("gemb")
	rt := newRuntime(t, "feature-extraction")
	e.model("embed", "feature-extraction", 0, rt)
	e.genModel("gen", 0)
	e.start(Config{})
	return e, f, rt, key, keyID
}

// The task route of an embedding GGUF: the customer's "text"/"texts"
// become the replica's /v1/embeddings input, its answer (placed by index)
// the task route's {"embeddings": [v]} per text, as an encoder answers;
// usage counts the texts and the answer's input tokens.
func TestGGUFEmbeddingsTaskRoute(t *testing.T) {
	e, f, rt, key, keyID := ggufEmbEnv(t)
	vec := func(i int) []any {
		out := []any{}
		for _, x := range fakellama.Embedding(i) {
			out = append(out, x)
		}
		return out
	}
	a := e.post(key, "/v1/gemb/embeddings", `{"text":"hello"}`)
	if a.status != 200 || !reflect.DeepEqual(a.body["embeddings"], []any{vec(0)}) || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("one text: %d %s", a.status, a.raw)
	}
	if up := string(<-f.Bodies); up != `{"input":["hello"]}` {
		t.Fatalf("the replica got %s", up)
	}
	a = e.post(key, "/v1/gemb/embeddings", `{"texts":["a","b","c"]}`)
	results, _ := a.body["results"].([]any)
	if a.status != 200 || len(results) != 3 {
		t.Fatalf("three texts: %d %s", a.status, a.raw)
	}
	for i, r := range results {
		if got := r.(map[string]any)["embeddings"]; !reflect.DeepEqual(got, []any{vec(i)}) {
			t.Errorf("text %d: %v, want %v (the replica's, by index)", i, got, vec(i))
		}
	}
	if up := string(<-f.Bodies); up != `{"input":["a","b","c"]}` {
		t.Fatalf("the replica got %s", up)
	}
	if req, in, out := e.tokensOf(keyID, "gemb"); req != 2 || in != 4*fakellama.PromptTokens || out != 0 {
		t.Fatalf("usage: %d requests, %d in, %d out; want 2, %d, 0", req, in, out, 4*fakellama.PromptTokens)
	}
	var texts int64
	if err := e.db.Pool.QueryRow(t.Context(), `SELECT SUM(texts) FROM usage WHERE api_key_id = $1 AND model_name = 'gemb'`, keyID).Scan(&texts); err != nil || texts != 4 {
		t.Fatalf("usage texts %d %v, want 4", texts, err)
	}
	// refused before the replica: bad bodies, parameters it cannot honour
	for _, bad := range []struct{ body, want string }{
		{`{"texts":[]}`, ""},
		{`{"sentences":["a"]}`, ""},
		{`{"text":"a","parameters":{"normalize":false}}`, "not supported by this model"},
	} {
		a := e.post(key, "/v1/gemb/embeddings", bad.body)
		if a.status != 400 || errCode(a) != "invalid_request" || !strings.Contains(a.raw, bad.want) {
			t.Errorf("%s: %d %s, want 400 invalid_request with %q", bad.body, a.status, a.raw, bad.want)
		}
	}
	if n := f.Requests.Load(); n != 2 {
		t.Fatalf("the replica answered %d requests, want 2", n)
	}
	// the replica's 4xx keeps its status; a malformed answer is a 502
	f.Status.Store(413)
	if a := e.post(key, "/v1/gemb/embeddings", `{"text":"long"}`); a.status != 413 || errCode(a) != "model_rejected_input" {
		t.Fatalf("replica 413: %d %s", a.status, a.raw)
	}
	f.Status.Store(0)
	// the encoder of the same task keeps today's path (/predict, not /v1/embeddings)
	before := f.Requests.Load()
	if a := e.post(key, "/v1/embed/embeddings", `{"text":"hello"}`); a.status != 200 || a.body["embeddings"] == nil || rt.hits.Load() != 1 || f.Requests.Load() != before {
		t.Fatalf("the encoder: %d %s (runtime hits %d)", a.status, a.raw, rt.hits.Load())
	}
}

// The OpenAI routes: /v1/embeddings relays an embedding GGUF's body as it
// is and meters its input tokens; an ONNX encoder there is refused with its
// task route named; the generation routes refuse an embedding GGUF; the
// model list holds the generation runtime's models, not the encoder.
func TestGGUFEmbeddingsOpenAI(t *testing.T) {
	e, f, _, key, keyID := ggufEmbEnv(t)
	body := `{"model":"gemb","input":["a","b"],"encoding_format":"float"}`
	a := e.post(key, "/v1/embeddings", body)
	data, _ := a.body["data"].([]any)
	if a.status != 200 || len(data) != 2 {
		t.Fatalf("/v1/embeddings: %d %s", a.status, a.raw)
	}
	if up := string(<-f.Bodies); up != body {
		t.Fatalf("the replica got %s, want the body as it is", up)
	}
	if req, in, _ := e.tokensOf(keyID, "gemb"); req != 1 || in != 2*fakellama.PromptTokens {
		t.Fatalf("usage: %d requests, %d in", req, in)
	}
	for _, c := range []struct{ path, body, want string }{
		{"/v1/embeddings", `{"model":"embed","input":"a"}`, "/v1/embed/embeddings"},
		{"/v1/chat/completions", `{"model":"gemb","messages":[{"role":"user","content":"hi"}]}`, "not text generation"},
		{"/v1/completions", `{"model":"gemb","prompt":"once"}`, "not text generation"},
		{"/v1/gemb/generation", `{"text":"once"}`, "not generation"},
	} {
		a := e.post(key, c.path, c.body)
		if a.status != 400 || errCode(a) != "task_not_supported" || !strings.Contains(a.raw, c.want) {
			t.Errorf("%s %s: %d %s, want 400 task_not_supported with %q", c.path, c.body, a.status, a.raw, c.want)
		}
	}
	// the OIP routes: refused with the routes that do serve the model, not
	// a bare 404 from a replica that does not speak v2
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v2/models/gemb/infer", `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["a"]}]}`},
		{"GET", "/v2/models/gemb", ""},
	} {
		a := e.call(c.method, key, c.path, c.body)
		if a.status != 400 || errCode(a) != "task_not_supported" || !strings.Contains(a.raw, "/v1/gemb/embeddings") {
			t.Errorf("%s %s: %d %s, want 400 task_not_supported naming /v1/gemb/embeddings", c.method, c.path, a.status, a.raw)
		}
	}
	a = e.call("GET", key, "/v1/models", "")
	var ids []string
	for _, d := range a.body["data"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	if a.status != 200 || !reflect.DeepEqual(ids, []string{"gemb", "gen"}) {
		t.Fatalf("/v1/models: %d %v, want gemb and gen", a.status, ids)
	}
}

// The catalogue snapshot keeps the format (a new field, left out for an
// ONNX model), and one written before the field existed still loads (its
// models taken as ONNX).
func TestCatalogSnapshotGGUF(t *testing.T) {
	models := map[string]*Model{
		"gemb":  {ID: 1, Name: "gemb", Task: "feature-extraction", Replicas: 1, GGUF: true},
		"embed": {ID: 2, Name: "embed", Task: "feature-extraction", Replicas: 1},
	}
	data, err := json.Marshal(models)
	if err != nil || strings.Count(string(data), `"gguf"`) != 1 {
		t.Fatalf("snapshot %s %v, want one gguf field", data, err)
	}
	old := `{"embed":{"id":2,"name":"embed","task":"feature-extraction","private":false,"owner":0,"autoscaled":false,"replicas":1}}`
	for _, tt := range []struct {
		data string
		want map[string]bool
	}{{string(data), map[string]bool{"gemb": true, "embed": false}}, {old, map[string]bool{"embed": false}}} {
		path := filepath.Join(t.TempDir(), "catalogue.json")
		if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newCatalog(nil)
		c.snapshot = path
		if n, err := c.loadSnapshot(); err != nil || n != len(tt.want) {
			t.Fatalf("loadSnapshot %s: %d %v", tt.data, n, err)
		}
		for name, gguf := range tt.want {
			if m, ok := c.Get(name); !ok || m.GGUF != gguf || m.ggufEmbeddings() != gguf {
				t.Errorf("%s: %+v, want gguf %v", name, m, gguf)
			}
		}
	}
}
