package apiserver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

const (
	adminTok    = "admin-test-token"
	internalTok = "internal-test-token"
)

func fixtureDir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join("..", "..", "shared", "fixtures", "nlp", name)
	if _, err := os.Stat(d); err != nil {
		t.Skipf("fixture %s absent (%v)", d, err)
	}
	return d
}

type env struct {
	t     *testing.T
	db    *pgtest.DB
	dir   string
	srv   *Server
	http  *httptest.Server
	ihttp *httptest.Server // the internal handler (the ops listener)
	smoke modelmgr.SmokeFunc
	cfg   Config // Redis, RedisPrefix, PrometheusURL for the tests that need them
	// pool, when set, is the server's pool instead of db.Pool (one that
	// reaches db through a fault proxy); the test's own queries keep db.Pool
	pool *pgxpool.Pool
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, db: pgtest.New(t, true), dir: t.TempDir()}
	e.start()
	return e
}

func (e *env) start() {
	store, err := modelmgr.NewFSStore(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	v := modelmgr.Validator{Extract: modelmgr.Extract, Smoke: e.smoke}
	cfg := e.cfg
	cfg.AdminToken, cfg.InternalToken, cfg.MaxUploadBytes = adminTok, internalTok, 8<<20
	pool := e.db.Pool
	if e.pool != nil {
		pool = e.pool
	}
	e.srv = New(cfg, pool, store, v, slog.New(slog.DiscardHandler))
	if e.http != nil {
		e.http.Close()
	}
	e.http = httptest.NewServer(e.srv.Handler())
	e.t.Cleanup(e.http.Close)
	if e.ihttp != nil {
		e.ihttp.Close()
	}
	e.ihttp = httptest.NewServer(e.srv.InternalHandler())
	e.t.Cleanup(e.ihttp.Close)
}

func (e *env) do(method, path, token string, body any) (int, map[string]any) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.http.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func tarGz(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func fixtureFiles(t testing.TB, name string) map[string][]byte {
	dir := fixtureDir(t, name)
	files := map[string][]byte{}
	for _, f := range []string{"model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	return files
}

// archiveForm is the multipart body of an upload of archive as model's
// next version, and its Content-Type.
func archiveForm(model string, archive []byte) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormFile("archive", model+".tar.gz")
	w.Write(archive)
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (e *env) upload(model string, archive []byte) (int, map[string]any) {
	e.t.Helper()
	body, contentType := archiveForm(model, archive)
	req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/api/v1/models/"+model+"/versions", body)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) count(q string, args ...any) int {
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// seed runs each statement against the test database, failing the test on
// the first error.
func (e *env) seed(stmts ...string) {
	e.t.Helper()
	for _, q := range stmts {
		if _, err := e.db.Pool.Exec(context.Background(), q); err != nil {
			e.t.Fatal(err)
		}
	}
}

// seedSentimentV1 stores a text-classification model "sentiment" with a
// version 1 row (no blob: enough to deploy through the API).
func (e *env) seedSentimentV1() {
	e.t.Helper()
	e.seed(`INSERT INTO models (name, task) VALUES ('sentiment', 'text-classification')`,
		`INSERT INTO model_versions (model_id, version, digest, size_bytes, task) SELECT id, 1, 'sha256:`+strings.Repeat("a", 64)+`', 1000, 'text-classification' FROM models WHERE name = 'sentiment'`)
}

// leftovers lists files in the store's blob and temp folders.
func (e *env) leftovers() (blobs, tmp []string) {
	b, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "sha256"))
	for _, f := range b {
		blobs = append(blobs, f.Name())
	}
	tm, _ := os.ReadDir(filepath.Join(e.dir, "tmp"))
	for _, f := range tm {
		tmp = append(tmp, f.Name())
	}
	return
}

func TestAuthOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	for _, r := range e.srv.Routes() {
		if r.Path == "/" || isWebPath(r.Path) {
			continue // the web pages log in with a session cookie: TestWebAuthOnEveryRoute
		}
		path := strings.NewReplacer(":name", "x", ":id", "1", ":kid", "1", ":prefix", "abcdefgh", ":digest", "sha256:"+strings.Repeat("a", 64)).Replace(r.Path)
		e.srv.authFails.reset() // one wrong token per route here, not guessing (TestTokenGuessingIsSlowed)
		wrongKind := "nlp_abcdefgh_" + strings.Repeat("a", 32)
		if strings.HasPrefix(r.Path, "/internal") {
			wrongKind = adminTok
		}
		for _, c := range []struct {
			token string
			want  int
		}{{"", 401}, {"not-a-token", 401}, {wrongKind, 403}} {
			code, body := e.do(r.Method, path, c.token, nil)
			if code != c.want {
				t.Errorf("%s %s with %q: %d, want %d", r.Method, r.Path, c.token, code, c.want)
			}
			if r.Method != http.MethodHead && body["error"] == nil {
				t.Errorf("%s %s: no error envelope", r.Method, r.Path)
			}
		}
	}
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t}
	e.srv = New(Config{}, nil, nil, modelmgr.Validator{}, slog.New(slog.DiscardHandler))
	for _, r := range e.srv.Routes() {
		if r.Path == "/" || isWebPath(r.Path) {
			continue // HTML pages for people, not part of the JSON API the document describes
		}
		p := r.Path
		for _, seg := range []string{"name", "id", "kid", "prefix", "digest"} {
			p = strings.ReplaceAll(p, ":"+seg, "{"+seg+"}")
		}
		ops, ok := doc.Paths[p]
		if !ok {
			t.Errorf("route %s %s missing from openapi.json", r.Method, p)
			continue
		}
		if _, ok := ops[strings.ToLower(r.Method)]; !ok {
			t.Errorf("route %s %s: method missing from openapi.json", r.Method, p)
		}
	}
}

func TestModelVersionLifecycle(t *testing.T) {
	e := newEnv(t)
	files := fixtureFiles(t, "sentiment")
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"}); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	if code, _ := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"}); code != 409 {
		t.Fatalf("duplicate create: %d", code)
	}
	for _, bad := range []map[string]any{{"name": "Bad_Name", "task": "text-classification"}, {"name": "ok", "task": "translation"}, {"name": "p", "task": "feature-extraction", "visibility": "private"}} {
		if code, _ := e.do("POST", "/api/v1/models", adminTok, bad); code != 400 {
			t.Errorf("create %v: %d, want 400", bad, code)
		}
	}
	arch := tarGz(t, files)
	code, v1 := e.upload("sentiment", arch)
	if code != 201 || v1["version"].(float64) != 1 || !strings.HasPrefix(v1["digest"].(string), "sha256:") {
		t.Fatalf("upload: %d %v", code, v1)
	}
	code, v2 := e.upload("sentiment", arch)
	if code != 201 || v2["version"].(float64) != 2 || v2["digest"] != v1["digest"] {
		t.Fatalf("second upload: %d %v", code, v2)
	}
	if blobs, tmp := e.leftovers(); len(blobs) != 1 || len(tmp) != 0 {
		t.Fatalf("same archive twice should be stored once: blobs %v tmp %v", blobs, tmp)
	}

	// Range download by a runtime
	req, _ := http.NewRequest("GET", e.ihttp.URL+"/internal/blobs/"+v1["digest"].(string), nil)
	req.Header.Set("Authorization", "Bearer "+artifactcred.Mint(artifactcred.Key(internalTok), v1["digest"].(string), time.Now().Add(time.Hour)))
	req.Header.Set("Range", "bytes=0-9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part, arch[:10]) {
		t.Fatalf("range: %d %x", resp.StatusCode, part)
	}

	// persistence across a restart: a new server on the same DB and store
	e.start()
	code, body := e.do("GET", "/api/v1/models/sentiment/versions", adminTok, nil)
	if code != 200 || len(body["versions"].([]any)) != 2 {
		t.Fatalf("after restart: %d %v", code, body)
	}

	// deploy, scale, observe NOTIFY
	conn, err := pgx.Connect(context.Background(), e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	conn.Exec(context.Background(), "LISTEN "+deployment.Channel)
	code, dep := e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, map[string]any{"replicas": 2, "resources": map[string]any{"memory": "512M", "cpus": 0.5}})
	if code != 200 || dep["version"].(float64) != 2 || dep["replicas"].(float64) != 2 || dep["memory_bytes"].(float64) != 512<<20 {
		t.Fatalf("deploy: %d %v", code, dep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	if err != nil || n.Payload != "sentiment" {
		t.Fatalf("notify: %v %v", n, err)
	}
	code, dep = e.do("POST", "/api/v1/models/sentiment/scale", adminTok, map[string]any{"replicas": 3})
	if code != 200 || dep["replicas"].(float64) != 3 || dep["generation"].(float64) != 2 {
		t.Fatalf("scale: %d %v", code, dep)
	}
	if code, _ := e.do("POST", "/api/v1/models/sentiment/scale", adminTok, map[string]any{"replicas": -1}); code != 400 {
		t.Fatalf("negative scale: %d", code)
	}
	if code, _ := e.do("DELETE", "/api/v1/models/sentiment", adminTok, nil); code != 409 {
		t.Fatalf("delete while deployed: %d, want 409", code)
	}
	if code, _ := e.do("DELETE", "/api/v1/models/sentiment?force=true", adminTok, nil); code != 204 {
		t.Fatalf("force delete: %d", code)
	}
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("%d deployments left", n)
	}
}

func TestConcurrentUploadsGetDistinctVersions(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "ner", "task": "token-classification"})
	arch := tarGz(t, fixtureFiles(t, "ner"))
	var wg sync.WaitGroup
	versions := make(chan float64, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, v := e.upload("ner", arch)
			if code != 201 {
				t.Errorf("upload: %d %v", code, v)
				return
			}
			versions <- v["version"].(float64)
		}()
	}
	wg.Wait()
	close(versions)
	seen := map[float64]bool{}
	for v := range versions {
		if seen[v] {
			t.Fatalf("version %v given twice", v)
		}
		seen[v] = true
	}
	if len(seen) != 4 {
		t.Fatalf("versions %v", seen)
	}
}

func TestUploadRefusalsLeaveNothing(t *testing.T) {
	e := newEnv(t)
	e.smoke = func(context.Context, string, string) error { return errors.New("onnx graph has no output logits") }
	e.start()
	e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"})
	e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "ner", "task": "token-classification"})
	good := fixtureFiles(t, "sentiment")
	with := func(mod func(m map[string][]byte)) []byte {
		m := map[string][]byte{}
		for k, v := range good {
			m[k] = v
		}
		mod(m)
		return tarGz(t, m)
	}
	tests := []struct {
		name, model string
		archive     []byte
		want        string
	}{
		{"missing model.onnx", "sentiment", with(func(m map[string][]byte) { delete(m, "model.onnx") }), "missing required file model.onnx"},
		{"bad config.json", "sentiment", with(func(m map[string][]byte) { m["config.json"] = []byte("{nope") }), "config.json is not valid JSON"},
		{"labels unfit for task", "ner", with(func(m map[string][]byte) {}), "no O / B- / I- labels"},
		{"bad tokenizer.json", "sentiment", with(func(m map[string][]byte) { m["tokenizer.json"] = []byte("[1,2") }), "tokenizer.json is not valid JSON"},
		{"not onnx", "sentiment", with(func(m map[string][]byte) { m["model.onnx"] = bytes.Repeat([]byte{0xff}, 100) }), "model.onnx"},
		{"traversal entry", "sentiment", with(func(m map[string][]byte) { m["../evil"] = []byte("x") }), "archive"},
		{"not an archive", "sentiment", []byte("plain text, not gzip"), "archive"},
		{"smoke test fails", "sentiment", with(func(m map[string][]byte) {}), "smoke inference failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.upload(tt.model, tt.archive)
			if code != 422 {
				t.Fatalf("%d %v", code, body)
			}
			details, _ := body["error"].(map[string]any)["details"].([]any)
			if !strings.Contains(fmt.Sprint(details), tt.want) {
				t.Fatalf("reasons %v lack %q", details, tt.want)
			}
		})
	}
	big := bytes.Repeat([]byte{1}, 9<<20)
	if code, _ := e.upload("sentiment", big); code != 413 {
		t.Fatalf("oversized upload: %d, want 413", code)
	}
	if n := e.count(`SELECT count(*) FROM model_versions`); n != 0 {
		t.Fatalf("%d version rows after refusals", n)
	}
	if blobs, tmp := e.leftovers(); len(blobs)+len(tmp) != 0 {
		t.Fatalf("left behind: blobs %v tmp %v", blobs, tmp)
	}
}

// A client that hangs up halfway through an upload leaves no row, blob or temp file.
func TestUploadCutOffLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification"})
	arch := tarGz(t, fixtureFiles(t, "sentiment"))
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	req, _ := http.NewRequest("POST", e.http.URL+"/api/v1/models/sentiment/versions", pr)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	go func() {
		w, _ := mw.CreateFormFile("archive", "m.tar.gz")
		w.Write(arch[:len(arch)/2])
		time.Sleep(100 * time.Millisecond)
		pw.CloseWithError(errors.New("client went away"))
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.count(`SELECT count(*) FROM model_versions`); n != 0 {
		t.Fatalf("%d rows", n)
	}
	if blobs, tmp := e.leftovers(); len(blobs)+len(tmp) != 0 {
		t.Fatalf("left behind: blobs %v tmp %v", blobs, tmp)
	}
}

func TestAccountsKeysUsage(t *testing.T) {
	e := newEnv(t)
	code, acc := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme", "plan": "standard"})
	if code != 201 {
		t.Fatalf("account: %d %v", code, acc)
	}
	id := int(acc["id"].(float64))
	code, key := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "ci"})
	secret, _ := key["key"].(string)
	if code != 201 || !strings.HasPrefix(secret, "nlp_"+key["prefix"].(string)+"_") {
		t.Fatalf("key: %d %v", code, key)
	}
	var stored []byte
	e.db.Pool.QueryRow(context.Background(), `SELECT hash FROM api_keys WHERE id = $1`, int(key["id"].(float64))).Scan(&stored)
	if bytes.Contains(stored, []byte(secret)) || len(stored) != 32 {
		t.Fatalf("key stored in clear or not as sha256")
	}
	code, list := e.do("GET", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, nil)
	if code != 200 || strings.Contains(fmt.Sprint(list), secret) {
		t.Fatalf("list leaks the key: %v", list)
	}
	// the customer key cannot use the backoffice
	if code, _ := e.do("GET", "/api/v1/models", secret, nil); code != 403 {
		t.Fatalf("customer key on admin API: %d", code)
	}
	if code, _ := e.do("DELETE", fmt.Sprintf("/api/v1/accounts/%d/keys/%d", id, int(key["id"].(float64))), adminTok, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if n := e.count(`SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`); n != 1 {
		t.Fatalf("revoked keys: %d", n)
	}
	if code, _ := e.do("POST", "/api/v1/accounts/999/keys", adminTok, nil); code != 404 {
		t.Fatalf("key for missing account: %d", code)
	}
	if code, body := e.do("GET", "/api/v1/usage?from=2026-01-01", adminTok, nil); code != 200 || body["usage"] == nil {
		t.Fatalf("usage: %d %v", code, body)
	}
	if code, _ := e.do("GET", "/api/v1/usage?from=yesterday", adminTok, nil); code != 400 {
		t.Fatalf("bad usage date: %d", code)
	}
	if code, body := e.do("GET", "/api/v1/nodes", adminTok, nil); code != 200 || body["nodes"] == nil {
		t.Fatalf("nodes: %d %v", code, body)
	}
}

// With Postgres unreachable, writes answer 503 with Retry-After (retry
// shortly), not 500 (a bug to report), and reads too.
func TestDatabaseDownIs503(t *testing.T) {
	ctx := context.Background()
	dead, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	store, err := modelmgr.NewFSStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{AdminToken: adminTok, InternalToken: internalTok}, dead, store, modelmgr.Validator{Extract: modelmgr.Extract}, slog.New(slog.DiscardHandler)).Handler())
	defer srv.Close()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1/models", `{"name":"m","task":"text-classification"}`},
		{"GET", "/api/v1/models", ""},
		{"POST", "/api/v1/models/m/scale", `{"replicas":2}`},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+adminTok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"unavailable"`) {
			t.Errorf("%s %s with Postgres down: %d %q %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
}
