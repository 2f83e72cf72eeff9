package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nlpswarm/nlpswarm/internal/faultproxy"
	"github.com/nlpswarm/nlpswarm/internal/pg"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// newOutageEnv is an env whose apiserver reaches its Postgres through a
// fault proxy (the test's own queries, e.count, go direct). It is not
// started: the caller may set smoke first.
func newOutageEnv(t *testing.T) (*env, *faultproxy.Proxy) {
	t.Helper()
	e := &env{t: t, db: pgtest.New(t, true), dir: t.TempDir()}
	u, err := url.Parse(e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultproxy.New(t, u.Host)
	u.Host = proxy.Addr()
	e.pool, err = pg.Open(context.Background(), pg.Config{URL: u.String(), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	return e, proxy
}

// answer is a response as the outage tests check it.
type answer struct {
	status     int
	code, msg  string
	retryAfter string
	raw        string
}

func (e *env) send(method, path, contentType string, body []byte) answer {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.http.URL+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminTok)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.Unmarshal(buf.Bytes(), &eb)
	return answer{status: resp.StatusCode, code: eb.Error.Code, msg: eb.Error.Message, retryAfter: resp.Header.Get("Retry-After"), raw: buf.String()}
}

func (e *env) sendUpload(model string, archive []byte) answer {
	e.t.Helper()
	body, contentType := archiveForm(model, archive)
	return e.send(http.MethodPost, "/api/v1/models/"+model+"/versions", contentType, body.Bytes())
}

// wantUnavailable checks the answer a client retries: 503 unavailable with
// Retry-After, and none of the driver's words (the log keeps them).
func wantUnavailable(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable || a.code != "unavailable" || a.retryAfter == "" {
		t.Errorf("%s with Postgres cut: %d %q Retry-After %q (%s), want 503 unavailable with Retry-After", what, a.status, a.code, a.retryAfter, a.raw)
	}
	for _, leak := range []string{"conn closed", "EOF", "failed to connect", "127.0.0.1", "SQLSTATE", "dial"} {
		if strings.Contains(a.raw, leak) {
			t.Errorf("%s: the answer names the driver's error (%q): %s", what, leak, a.raw)
		}
	}
}

// The chaos run's PostgresRestart: Postgres goes away while a model version
// is uploaded. The upload is answered 503 unavailable with Retry-After (the
// client retries it), never 500 internal, both when the database is gone
// before the upload and when it goes between the model lookup and the
// version row (a pooled connection Postgres closed meanwhile answers BEGIN
// with "conn closed"); once the cut ends the same upload succeeds.
func TestUploadDuringPostgresOutageIs503(t *testing.T) {
	e, proxy := newOutageEnv(t)
	var cutInValidation atomic.Bool
	e.smoke = func(context.Context, string, string) error {
		if cutInValidation.Load() { // the model row was read; the version row comes next
			proxy.Cut()
		}
		return nil
	}
	e.start()
	if a := e.send("POST", "/api/v1/models", "application/json", []byte(`{"name":"sentiment","task":"text-classification"}`)); a.status != 201 {
		t.Fatalf("create: %d %s", a.status, a.raw)
	}
	arch := tarGz(t, fixtureFiles(t, "sentiment"))
	versions := func() int { return e.count(`SELECT count(*) FROM model_versions`) }

	proxy.Cut()
	wantUnavailable(t, "upload", e.sendUpload("sentiment", arch))
	proxy.Restore()
	if a := e.sendUpload("sentiment", arch); a.status != 201 {
		t.Fatalf("upload after the cut: %d %s", a.status, a.raw)
	}

	cutInValidation.Store(true)
	wantUnavailable(t, "upload cut after validation", e.sendUpload("sentiment", arch))
	cutInValidation.Store(false)
	if n := versions(); n != 1 {
		t.Fatalf("%d versions after the cut upload, want 1 (nothing half-written)", n)
	}
	proxy.Restore()
	a := e.sendUpload("sentiment", arch)
	if a.status != 201 {
		t.Fatalf("the same upload after the cut: %d %s", a.status, a.raw)
	}
	if n := versions(); n != 2 {
		t.Fatalf("%d versions, want 2", n)
	}
}

// The other writes of the API meet the same outage the same way: 503
// unavailable with Retry-After, never 500, including when the connection
// the pool hands out was closed by Postgres a moment ago.
func TestWritesDuringPostgresOutageAre503(t *testing.T) {
	e, proxy := newOutageEnv(t)
	e.start()
	writes := []struct{ method, path, body string }{
		{"POST", "/api/v1/models", `{"name":"m","task":"text-classification"}`},
		{"DELETE", "/api/v1/models/m", ""},
		{"PUT", "/api/v1/models/m/deployment", `{"replicas":1}`},
		{"POST", "/api/v1/models/m/scale", `{"replicas":2}`},
		{"DELETE", "/api/v1/models/m/deployment", ""},
		{"POST", "/api/v1/plans", `{"name":"gold","requests_per_second":10,"burst":20}`},
		{"PATCH", "/api/v1/plans/gold", `{"burst":30}`},
		{"POST", "/api/v1/accounts", `{"name":"acme"}`},
		{"PATCH", "/api/v1/accounts/1", `{"plan":"gold"}`},
		{"POST", "/api/v1/accounts/1/keys", `{"name":"k"}`},
		{"DELETE", "/api/v1/accounts/1/keys/1", ""},
		{"DELETE", "/api/v1/keys/nlp_live_abcdefgh", ""},
	}
	for _, w := range writes {
		for _, fresh := range []bool{false, true} {
			// fresh: a request just used a pooled connection (idle under
			// the pool's 1 s ping threshold) when Postgres goes
			if fresh {
				if a := e.send("GET", "/api/v1/models", "", nil); a.status != 200 {
					t.Fatalf("GET models before the cut: %d %s", a.status, a.raw)
				}
			}
			proxy.Cut()
			var ct string
			if w.body != "" {
				ct = "application/json"
			}
			wantUnavailable(t, w.method+" "+w.path, e.send(w.method, w.path, ct, []byte(w.body)))
			proxy.Restore()
		}
	}
}

// The API reference tells clients which answers to retry: every /api/v1
// route that reaches the database, the upload first, documents 503 (the
// answer above), with Retry-After.
func TestOpenAPIDocumentsDatabaseOutage(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]struct{ Responses map[string]map[string]any } `json:"paths"`
		Components struct {
			Responses map[string]struct {
				Headers map[string]any `json:"headers"`
			} `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.Components.Responses["Unavailable"].Headers["Retry-After"]; !ok {
		t.Errorf("components.responses.Unavailable does not document Retry-After")
	}
	upload := doc.Paths["/api/v1/models/{name}/versions"]["post"].Responses["503"]
	if upload["$ref"] != "#/components/responses/Unavailable" {
		t.Errorf("POST /api/v1/models/{name}/versions: 503 is %v, want the Unavailable response", upload)
	}
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/api/v1/") || path == "/api/v1/openapi.json" {
			continue // /internal reads blobs from disk; the document itself is embedded
		}
		for method, op := range ops {
			if _, ok := op.Responses["503"]; !ok {
				t.Errorf("%s %s: no 503 documented", strings.ToUpper(method), path)
			}
		}
	}
}

// dbUnavailable on the errors pgx gives while Postgres is away, made for
// real through the proxy: a pool acquire that times out, a query whose
// deadline passes while the link is silent, a connection refused, and a
// pooled connection Postgres closed (BEGIN: "conn closed"); and not on the
// errors that are the request's or a bug.
func TestDBUnavailableClassifiesOutageErrors(t *testing.T) {
	e, proxy := newOutageEnv(t)
	ctx := context.Background()
	if err := e.pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 300*time.Millisecond) }

	// every connection is held: acquiring one waits for the deadline
	var held []*pgxpool.Conn
	for range 4 {
		c, err := e.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	dctx, cancel := deadline()
	_, errAcquire := e.pool.Exec(dctx, `SELECT 1`)
	cancel()
	for _, c := range held {
		c.Release()
	}

	proxy.Freeze() // silence: no answer, no reset
	dctx, cancel = deadline()
	_, errFrozen := e.pool.Exec(dctx, `SELECT 1`)
	cancel()
	proxy.Restore()

	down, err := pg.Open(ctx, pg.Config{URL: "postgres://u@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	_, errRefused := down.Exec(ctx, `SELECT 1`)

	if err := e.pool.Ping(ctx); err != nil { // a fresh pooled connection
		t.Fatal(err)
	}
	proxy.Cut()
	errClosed := pgx.BeginFunc(ctx, e.pool, func(pgx.Tx) error { return nil })
	proxy.Restore()

	for _, c := range []struct {
		what string
		err  error
		want bool
	}{
		{"pool acquire timeout", fmt.Errorf("deploy m: %w", errAcquire), true},
		{"query deadline, link silent", errFrozen, true},
		{"connection refused", errRefused, true},
		{"pooled connection closed by Postgres", fmt.Errorf("scale m: %w", errClosed), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"not found", modelmgr.ErrNotFound, false},
		{"a bug", errors.New("boom"), false},
	} {
		if c.err == nil {
			t.Errorf("%s: no error happened", c.what)
			continue
		}
		if got := dbUnavailable(c.err); got != c.want {
			t.Errorf("%s (%v): dbUnavailable %v, want %v", c.what, c.err, got, c.want)
		}
	}
}
