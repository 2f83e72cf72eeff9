package apiserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/net/html"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// webClient is a browser stand-in: a cookie jar, redirects not followed.
type webClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

type webResp struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (e *env) webClient() *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{t: e.t, base: e.http.URL, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (w *webClient) do(req *http.Request) webResp {
	w.t.Helper()
	resp, err := w.c.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return webResp{status: resp.StatusCode, body: string(b), location: resp.Header.Get("Location"), header: resp.Header}
}

func (w *webClient) get(path string) webResp {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.base+path, nil)
	return w.do(req)
}

func (w *webClient) post(path string, form url.Values) webResp {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return w.do(req)
}

// upload posts the model page's multipart form: fields in the given order,
// the archive where "archive" stands.
func (w *webClient) upload(model string, fields [][2]string, archive []byte) webResp {
	w.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		if f[0] == "archive" {
			fw, _ := mw.CreateFormFile("archive", model+".tar.gz")
			fw.Write(archive)
			continue
		}
		mw.WriteField(f[0], f[1])
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, w.base+"/ui/models/"+model+"/versions", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return w.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", body)
	}
	return m[1]
}

// login returns a logged-in client and its CSRF token.
func (e *env) login() (*webClient, string) {
	e.t.Helper()
	w := e.webClient()
	r := w.get("/ui/login")
	if r.status != 200 {
		e.t.Fatalf("login page: %d", r.status)
	}
	r = w.post("/ui/login", url.Values{"csrf": {csrfOf(e.t, r.body)}, "token": {adminTok}, "next": {"/ui/models"}})
	if r.status != http.StatusSeeOther || r.location != "/ui/models" {
		e.t.Fatalf("login: %d %s\n%s", r.status, r.location, r.body)
	}
	r = w.get("/ui/models")
	if r.status != 200 {
		e.t.Fatalf("models after login: %d", r.status)
	}
	return w, csrfOf(e.t, r.body)
}

func TestWebLogin(t *testing.T) {
	e := newEnv(t)
	w := e.webClient()

	r := w.get("/")
	if r.status != http.StatusSeeOther || r.location != "/ui/" {
		t.Fatalf("root: %d %s", r.status, r.location)
	}
	r = w.get("/ui/deployments?x=1")
	if r.status != http.StatusSeeOther || r.location != "/ui/login?next="+url.QueryEscape("/ui/deployments?x=1") {
		t.Fatalf("page without a session: %d %q", r.status, r.location)
	}
	r = w.get("/ui/login?next=" + url.QueryEscape("/ui/deployments?x=1"))
	if r.status != 200 || !strings.Contains(r.body, `<label for="token">`) {
		t.Fatalf("login page: %d", r.status)
	}
	csrf := csrfOf(t, r.body)
	for _, want := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if r.header.Get(want) == "" {
			t.Errorf("login page lacks %s", want)
		}
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	cookie := r.header.Get("Set-Cookie")
	for _, want := range []string{"nlpswarm_session=", "Path=/ui", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("cookie Secure on plain HTTP without the option: %q", cookie)
	}

	// no CSRF token, a wrong token, the wrong admin token
	if r := w.post("/ui/login", url.Values{"token": {adminTok}}); r.status != 403 || strings.Contains(r.body, adminTok) {
		t.Fatalf("login without csrf: %d", r.status)
	}
	if r := w.post("/ui/login", url.Values{"token": {adminTok}, "csrf": {csrf + "x"}}); r.status != 403 {
		t.Fatalf("login with a wrong csrf: %d", r.status)
	}
	r = w.post("/ui/login", url.Values{"token": {"guess"}, "csrf": {csrf}})
	if r.status != 401 || !strings.Contains(r.body, "not the admin token") || strings.Contains(r.body, "guess") {
		t.Fatalf("wrong token: %d %s", r.status, r.body)
	}
	if r := w.post("/ui/login", url.Values{"token": {internalTok}, "csrf": {csrf}}); r.status != 401 {
		t.Fatalf("internal token logs in: %d", r.status)
	}
	// the right token, with a next that tries to leave the site
	r = w.post("/ui/login", url.Values{"token": {adminTok}, "csrf": {csrf}, "next": {"//evil.example/ui/"}})
	if r.status != http.StatusSeeOther || r.location != "/ui/models" {
		t.Fatalf("login: %d %q", r.status, r.location)
	}
	cookie = r.header.Get("Set-Cookie")
	if strings.Contains(cookie, adminTok) || strings.Contains(cookie, csrf) {
		t.Fatalf("cookie carries a secret: %q", cookie)
	}
	if r := w.get("/ui/deployments"); r.status != 200 {
		t.Fatalf("after login: %d", r.status)
	}
	for _, next := range []string{"/ui/nodes", "https://evil.example/ui/x", "/api/v1/models", `/\evil.example`, "/ui/login"} {
		want := next
		if next != "/ui/nodes" {
			want = "/ui/models"
		}
		if got := localNext(next); got != want {
			t.Errorf("localNext(%q) = %q, want %q", next, got, want)
		}
	}

	// a tampered cookie is no session
	u, _ := url.Parse(e.http.URL + "/ui/")
	ck := w.c.Jar.Cookies(u)[0]
	for _, forgedValue := range []string{
		ck.Value[:len(ck.Value)-2] + "AA",          // signature changed
		strings.Replace(ck.Value, ".1.", ".0.", 1), // payload changed
		"v1." + strings.Repeat("a", 32) + ".1.99999999999.x",
	} {
		forged := e.webClient()
		forged.c.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: forgedValue, Path: "/ui"}})
		if r := forged.get("/ui/models"); r.status != http.StatusSeeOther {
			t.Fatalf("forged cookie %q accepted: %d", forgedValue, r.status)
		}
	}
	// an expired session is no session
	old := e.srv.web.now
	e.srv.web.now = func() time.Time { return time.Now().Add(13 * time.Hour) }
	if r := w.get("/ui/models"); r.status != http.StatusSeeOther {
		t.Fatalf("expired session accepted: %d", r.status)
	}
	e.srv.web.now = old

	// logout ends the session, even for a copy of the cookie
	r = w.get("/ui/models")
	copyJar, _ := cookiejar.New(nil)
	copyJar.SetCookies(u, w.c.Jar.Cookies(u))
	r = w.post("/ui/logout", url.Values{"csrf": {csrfOf(t, r.body)}})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location, "/ui/login") {
		t.Fatalf("logout: %d %s", r.status, r.location)
	}
	replay := &webClient{t: t, base: e.http.URL, c: &http.Client{Jar: copyJar, CheckRedirect: w.c.CheckRedirect}}
	if r := replay.get("/ui/models"); r.status != http.StatusSeeOther {
		t.Fatalf("session alive after logout: %d", r.status)
	}
	// issue 17 finding 8: the logout holds after a restart and on another
	// replica (a new Server on the same database)
	e.start()
	replay.base = e.http.URL
	if r := replay.get("/ui/models"); r.status != http.StatusSeeOther {
		t.Fatalf("logged-out session alive after a restart: %d", r.status)
	}
}

func TestWebSecureCookie(t *testing.T) {
	db := pgtest.New(t, true).Pool
	store, _ := modelmgr.NewFSStore(t.TempDir())
	for _, tc := range []struct {
		name   string
		opt    bool
		tls    bool
		secure bool
	}{{"plain http", false, false, false}, {"option", true, false, true}, {"tls", false, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := New(Config{AdminToken: adminTok, InternalToken: internalTok, Web: WebConfig{SecureCookie: tc.opt}},
				db, store, modelmgr.Validator{}, slog.New(slog.DiscardHandler))
			var hs *httptest.Server
			if tc.tls {
				hs = httptest.NewTLSServer(srv.Handler())
			} else {
				hs = httptest.NewServer(srv.Handler())
			}
			defer hs.Close()
			cl := hs.Client() // trusts the test server's certificate
			resp, err := cl.Get(hs.URL + "/ui/login")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ck := resp.Cookies()
			if len(ck) != 1 || ck[0].Secure != tc.secure || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteLaxMode {
				t.Fatalf("cookie %+v, want Secure=%v", ck, tc.secure)
			}
		})
	}
}

// routeRE turns a gin path into a regexp of the paths it serves.
func routeRE(p string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.MustCompile(`:[a-z]+`).ReplaceAllString(regexp.QuoteMeta(p), `[^/]+`) + "$")
}

// webFixture fills the database through the JSON API so that every page
// has its forms: a model with a version and a deployment, an account with
// a key, usage, a node with a GPU. It returns the account id and the key.
func webFixture(e *env) (int, string) {
	t := e.t
	if code, body := e.do("POST", "/api/v1/models", adminTok, map[string]any{"name": "sentiment", "task": "text-classification", "description": "movie reviews"}); code != 201 {
		t.Fatalf("create model: %d %v", code, body)
	}
	if code, body := e.upload("sentiment", tarGz(t, fixtureFiles(t, "sentiment"))); code != 201 {
		t.Fatalf("upload: %d %v", code, body)
	}
	if code, body := e.do("PUT", "/api/v1/models/sentiment/deployment", adminTok, map[string]any{"replicas": 2}); code != 200 {
		t.Fatalf("deploy: %d %v", code, body)
	}
	code, acc := e.do("POST", "/api/v1/accounts", adminTok, map[string]any{"name": "acme"})
	if code != 201 {
		t.Fatalf("account: %d %v", code, acc)
	}
	id := int(acc["id"].(float64))
	code, key := e.do("POST", fmt.Sprintf("/api/v1/accounts/%d/keys", id), adminTok, map[string]any{"name": "first"})
	if code != 201 {
		t.Fatalf("key: %d %v", code, key)
	}
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := e.db.Pool.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// what the gateway's usage flush writes
	exec(`INSERT INTO usage (api_key_id, model_id, day, requests, texts, errors)
		SELECT $1, m.id, current_date - d, 10 + d, 12 + d, d % 3 FROM models m, generate_series(0, 40, 3) d WHERE m.name = 'sentiment'`, int(key["id"].(float64)))
	// what the scheduler and a node agent write; no GPU here, so a fake one says so in its name
	exec(`INSERT INTO nodes (id, hostname, role, availability, state, labels, nano_cpus, memory_bytes)
		VALUES ('fakenode0001', 'fake-gpu-node', 'worker', 'active', 'ready', '{"type":"machine-learning"}', 8000000000, 34359738368)`)
	exec(`INSERT INTO gpus (node_id, uuid, idx, name, memory_total, memory_used, memory_free, util_gpu)
		VALUES ('fakenode0001', 'GPU-fake-0', 0, 'Fake GPU (test stand-in)', 17179869184, 4294967296, 12884901888, 37)`)
	exec(`INSERT INTO gpu_assignments (deployment_id, slot, node_id, gpu_uuid, memory_bytes)
		SELECT d.id, 0, 'fakenode0001', 'GPU-fake-0', 2147483648 FROM deployments d`)
	exec(`UPDATE deployments SET status = 'deploying', status_message = '1 of 2 replicas running', observed_generation = generation,
		observed = '{"running":1,"desired":2,"tasks":[{"slot":1,"node":"fake-gpu-node","state":"running"},{"slot":2,"node":"fake-gpu-node","state":"pending","error":"no suitable node"}]}'`)
	return id, key["key"].(string)
}

// pagesOf lists the GET pages of the UI, with real ids and names.
func pagesOf(e *env, account int) []string {
	var out []string
	for _, r := range e.srv.Routes() {
		if r.Method != http.MethodGet || !isWebPath(r.Path) || strings.Contains(r.Path, "*") {
			continue
		}
		out = append(out, strings.NewReplacer(":name", "sentiment", ":id", strconv.Itoa(account)).Replace(r.Path))
	}
	return out
}

type formInfo struct {
	page, action, method string
	fields               map[string]string
	hasCSRF, csrfFirst   bool
}

// formsOf parses every form of a page with its fields' default values.
func formsOf(t *testing.T, page, body string) []formInfo {
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var out []formInfo
	var cur *formInfo
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attr := map[string]string{}
			for _, a := range n.Attr {
				attr[a.Key] = a.Val
			}
			switch n.Data {
			case "form":
				out = append(out, formInfo{page: page, action: attr["action"], method: strings.ToLower(attr["method"]), fields: map[string]string{}})
				cur = &out[len(out)-1]
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = nil
				return
			case "input", "select", "textarea":
				if cur != nil && attr["name"] != "" {
					if attr["name"] == "csrf" {
						cur.hasCSRF = true
						cur.csrfFirst = len(cur.fields) == 0
					}
					v := attr["value"]
					if n.Data == "select" {
						v = ""
					}
					if v == "" && attr["name"] != "csrf" {
						v = map[string]string{"name": "x-form", "replicas": "1", "task": "text-classification", "version": "0", "plan": "free"}[attr["name"]]
					}
					cur.fields[attr["name"]] = v
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

// state is what the forms can change, to see that a refused form changed nothing.
func (e *env) state() string {
	var s string
	err := e.db.Pool.QueryRow(context.Background(), `SELECT concat_ws('|',
		(SELECT count(*) FROM models), (SELECT count(*) FROM model_versions), (SELECT count(*) FROM accounts),
		(SELECT count(*) FROM api_keys), (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL),
		(SELECT string_agg(replicas::text || ':' || generation::text, ',') FROM deployments))`).Scan(&s)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// Every form of every page, and every POST route, refuses a request with no
// CSRF token, a wrong one or another session's, and changes nothing.
func TestWebFormsRejectMissingCSRF(t *testing.T) {
	e := newEnv(t)
	account, _ := webFixture(e)
	canaryFixture(e) // the deployments page's promote and rollback forms
	w, token := e.login()
	other, otherToken := e.login()
	_ = other
	if token == otherToken {
		t.Fatal("two sessions share a CSRF token")
	}
	forms := map[string]formInfo{}
	for _, p := range append(pagesOf(e, account), "/ui/login") {
		r := w.get(p)
		if p == "/ui/login" {
			r = e.webClient().get(p)
		}
		if r.status == http.StatusSeeOther {
			r = w.get(r.location)
		}
		if r.status != 200 {
			t.Fatalf("%s: %d", p, r.status)
		}
		for _, f := range formsOf(t, p, r.body) {
			if f.method != "post" {
				t.Errorf("%s: form to %s is %q, not post", p, f.action, f.method)
				continue
			}
			if !f.hasCSRF {
				t.Errorf("%s: form to %s has no csrf field", p, f.action)
			}
			if !f.csrfFirst {
				t.Errorf("%s: form to %s: the csrf field is not the first (the upload checks it before the file)", p, f.action)
			}
			forms[f.action+" "+strings.Join(sortedKeys(f.fields), ",")] = f
		}
	}
	covered := map[string]bool{}
	before := e.state()
	for _, f := range forms {
		for _, r := range e.srv.Routes() {
			if r.Method == http.MethodPost && routeRE(r.Path).MatchString(f.action) {
				covered[r.Path] = true
			}
		}
		for _, tc := range []struct{ name, csrf string }{{"missing", ""}, {"wrong", token[:len(token)-2] + "xx"}, {"another session's", otherToken}} {
			vals := url.Values{}
			for k, v := range f.fields {
				vals.Set(k, v)
			}
			vals.Del("csrf")
			if tc.csrf != "" {
				vals.Set("csrf", tc.csrf)
			}
			client := w
			if f.action == "/ui/login" {
				client = e.webClient()
				client.get("/ui/login")
				vals.Set("token", adminTok)
			}
			var r webResp
			if _, ok := f.fields["archive"]; ok {
				fields := [][2]string{}
				if tc.csrf != "" {
					fields = append(fields, [2]string{"csrf", tc.csrf})
				}
				fields = append(fields, [2]string{"archive", ""})
				r = client.upload("sentiment", fields, tarGz(t, fixtureFiles(t, "sentiment")))
			} else {
				r = client.post(f.action, vals)
			}
			if r.status != http.StatusForbidden || !strings.Contains(r.body, "security token") {
				t.Errorf("%s (from %s) with %s csrf: %d, want 403 page", f.action, f.page, tc.name, r.status)
			}
		}
	}
	t.Logf("%d distinct forms checked, reaching %d POST routes", len(forms), len(covered))
	for _, r := range e.srv.Routes() {
		if r.Method == http.MethodPost && isWebPath(r.Path) && !covered[r.Path] {
			t.Errorf("POST %s: no form on any page reaches it, so this test did not check it", r.Path)
		}
	}
	// the upload also refuses a token that comes after the archive
	r := w.upload("sentiment", [][2]string{{"archive", ""}, {"csrf", token}}, tarGz(t, fixtureFiles(t, "sentiment")))
	if r.status != http.StatusForbidden {
		t.Errorf("upload with the csrf field after the file: %d", r.status)
	}
	if after := e.state(); after != before {
		t.Fatalf("refused forms changed the database: %s → %s", before, after)
	}
	if _, tmp := e.leftovers(); len(tmp) != 0 {
		t.Fatalf("refused uploads left %v", tmp)
	}
	// and with the right token each form goes through (one of them, for the record)
	if r := w.post("/ui/deployments/sentiment/scale", url.Values{"csrf": {token}, "replicas": {"3"}}); r.status != http.StatusSeeOther {
		t.Fatalf("scale with the token: %d %s", r.status, r.body)
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// No page shows a key, the admin token or the internal token, except the
// answer that creates a key, once.
func TestWebNoSecretsInPages(t *testing.T) {
	e := newEnv(t)
	account, apiKey := webFixture(e)
	w, token := e.login()

	r := w.post(fmt.Sprintf("/ui/accounts/%d/keys", account), url.Values{"csrf": {token}, "name": {"web"}})
	if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create key: %d %v", r.status, r.header)
	}
	m := regexp.MustCompile(`id="new-key"[^>]*value="(nlp_[^"]+)"`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("the new key is not shown:\n%s", r.body)
	}
	webKey := m[1]
	if strings.Count(r.body, webKey) != 1 {
		t.Errorf("the new key appears %d times on its page", strings.Count(r.body, webKey))
	}
	secrets := map[string]string{"admin token": adminTok, "internal token": internalTok, "API key": apiKey, "web key": webKey}
	for name, sec := range secrets {
		if name != "web key" && strings.Contains(r.body, sec) {
			t.Errorf("key creation page shows the %s", name)
		}
	}
	var hash []byte
	e.db.Pool.QueryRow(context.Background(), `SELECT hash FROM api_keys WHERE name = 'web'`).Scan(&hash)
	if len(hash) != 32 {
		t.Fatalf("web key not stored as a hash")
	}

	// every page, error pages and static files included
	paths := append(pagesOf(e, account), "/ui/login", "/ui/nope", "/ui/models/nope", "/ui/accounts/999",
		"/ui/static/app.js", "/ui/static/app.css", "/ui/static/favicon.svg", "/ui/deployments?done=uploaded&v=1")
	checked := 0
	for _, p := range paths {
		for _, cl := range []*webClient{w, e.webClient()} {
			r := cl.get(p)
			if r.status == http.StatusSeeOther {
				r = cl.get(r.location)
			}
			if r.status != 200 && r.status != 404 {
				t.Errorf("%s: %d", p, r.status)
			}
			for name, sec := range secrets {
				if strings.Contains(r.body, sec) {
					t.Errorf("%s shows the %s", p, name)
				}
				for _, v := range r.header {
					if strings.Contains(strings.Join(v, " "), sec) {
						t.Errorf("%s: a header carries the %s", p, name)
					}
				}
			}
			checked++
		}
	}
	// refused forms and failed logins do not echo what was sent
	for _, r := range []webResp{
		w.post("/ui/deployments/sentiment/scale", url.Values{"replicas": {adminTok}}),
		w.post("/ui/deployments/sentiment/scale", url.Values{"csrf": {token}, "replicas": {adminTok}}),
		w.post("/ui/accounts", url.Values{"csrf": {token}, "name": {""}, "plan": {internalTok}}),
		e.webClient().post("/ui/login", url.Values{"token": {adminTok}}),
	} {
		for name, sec := range secrets {
			if strings.Contains(r.body, sec) {
				t.Errorf("a refused form (%d) shows the %s", r.status, name)
			}
		}
		checked++
	}
	t.Logf("%d answers checked for %d secrets", checked, len(secrets))
}

func TestWebAuthOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	w := e.webClient()
	for _, r := range e.srv.Routes() {
		if !isWebPath(r.Path) {
			continue
		}
		path := strings.NewReplacer(":name", "x", ":id", "1", ":kid", "1", "*file", "app.css").Replace(r.Path)
		public := path == "/ui/login" || strings.HasPrefix(path, "/ui/static/")
		for _, bearer := range []string{"", adminTok} {
			req, _ := http.NewRequest(r.Method, e.http.URL+path, strings.NewReader(""))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer) // the API's token is no session
			}
			res := w.do(req)
			switch {
			case public && r.Method == http.MethodGet:
				if res.status != 200 {
					t.Errorf("%s %s: %d", r.Method, path, res.status)
				}
			case r.Method == http.MethodGet:
				if res.status != http.StatusSeeOther || !strings.HasPrefix(res.location, "/ui/login?next=") {
					t.Errorf("%s %s without a session: %d %s", r.Method, path, res.status, res.location)
				}
			default:
				if res.status != http.StatusForbidden || !strings.Contains(res.header.Get("Content-Type"), "text/html") {
					t.Errorf("%s %s without a session: %d", r.Method, path, res.status)
				}
			}
		}
	}
	if n := e.count(`SELECT count(*) FROM accounts`); n != 0 {
		t.Fatalf("%d accounts made without a session", n)
	}
}

// The forms write desired state exactly as the JSON API does and NOTIFY the
// scheduler; refused values change nothing.
func TestWebDeployScaleUndeploy(t *testing.T) {
	e := newEnv(t)
	w, token := e.login()
	r := w.post("/ui/models", url.Values{"csrf": {token}, "name": {"sentiment"}, "task": {"text-classification"}, "description": {"reviews"}})
	if r.status != http.StatusSeeOther || r.location != "/ui/models/sentiment?done=created" {
		t.Fatalf("create model: %d %s %s", r.status, r.location, r.body)
	}
	if r := w.post("/ui/models", url.Values{"csrf": {token}, "name": {"Bad Name"}, "task": {"text-classification"}}); r.status != 400 || !strings.Contains(r.body, `role="alert"`) {
		t.Fatalf("bad model name: %d", r.status)
	}
	// deploying before any version is refused with the reason
	if r := w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "replicas": {"1"}}); r.status != 400 || !strings.Contains(r.body, "push one first") {
		t.Fatalf("deploy without a version: %d %s", r.status, r.body)
	}
	// upload through the form (the csrf field first, as the form sends it)
	arch := tarGz(t, fixtureFiles(t, "sentiment"))
	r = w.upload("sentiment", [][2]string{{"csrf", token}, {"archive", ""}}, arch)
	if r.status != http.StatusSeeOther || r.location != "/ui/models/sentiment?done=uploaded&v=1" {
		t.Fatalf("upload: %d %s %s", r.status, r.location, r.body)
	}
	page := w.get(r.location)
	for _, want := range []string{"Version 1 was uploaded", `<th scope="row">1</th>`, "sha256:", "valid", "NEGATIVE, POSITIVE", `action="/ui/models/sentiment/deploy"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("model page lacks %q", want)
		}
	}
	// a refused archive shows every reason and stores nothing
	bad := fixtureFiles(t, "sentiment")
	delete(bad, "model.onnx")
	r = w.upload("sentiment", [][2]string{{"csrf", token}, {"archive", ""}}, tarGz(t, bad))
	if r.status != 422 || !strings.Contains(r.body, "missing required file model.onnx") || !strings.Contains(r.body, `role="alert"`) {
		t.Fatalf("refused upload: %d %s", r.status, r.body)
	}

	conn, err := pgx.Connect(context.Background(), e.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "LISTEN "+deployment.Channel); err != nil {
		t.Fatal(err)
	}
	notified := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		n, err := conn.WaitForNotification(ctx)
		if err != nil || n.Payload != "sentiment" {
			t.Fatalf("%s: no NOTIFY (%v %v)", what, n, err)
		}
	}
	desired := func() (replicas int, gen int64, mem int64, labels string) {
		e.db.Pool.QueryRow(context.Background(), `SELECT replicas, generation, memory_bytes, placement_labels::text FROM deployments`).Scan(&replicas, &gen, &mem, &labels)
		return
	}

	r = w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "version": {"0"}, "replicas": {"2"}, "memory": {"512M"}, "cpus": {"0.5"}, "labels": {"zone=a"}})
	if r.status != http.StatusSeeOther || r.location != "/ui/deployments?done=deployed" {
		t.Fatalf("deploy: %d %s %s", r.status, r.location, r.body)
	}
	notified("deploy")
	if rep, gen, mem, labels := desired(); rep != 2 || gen != 1 || mem != 512<<20 || labels != `{"zone": "a"}` {
		t.Fatalf("desired after deploy: %d %d %d %s", rep, gen, mem, labels)
	}
	page = w.get("/ui/deployments")
	for _, want := range []string{`id="dep-sentiment"`, "pending", "waiting for the scheduler", "0 / 2", "Undeploy sentiment", `aria-label="Scale sentiment up to 3"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("deployments page lacks %q", want)
		}
	}
	// the model page's deploy form shows the deployment as it is
	page = w.get("/ui/models/sentiment")
	for _, want := range []string{`value="512M"`, `value="0.5"`, `value="zone=a"`, "Update deployment"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("deploy form lacks %q", want)
		}
	}
	for _, bad := range []string{"-1", "101", "two", ""} {
		if r := w.post("/ui/deployments/sentiment/scale", url.Values{"csrf": {token}, "replicas": {bad}}); r.status != 400 || !strings.Contains(r.body, "replicas") {
			t.Errorf("scale to %q: %d", bad, r.status)
		}
	}
	r = w.post("/ui/deployments/sentiment/scale", url.Values{"csrf": {token}, "replicas": {"3"}})
	if r.status != http.StatusSeeOther || r.location != "/ui/deployments?done=scaled" {
		t.Fatalf("scale: %d %s", r.status, r.body)
	}
	notified("scale")
	if rep, gen, _, labels := desired(); rep != 3 || gen != 2 || labels != `{"zone": "a"}` {
		t.Fatalf("desired after scale: %d %d %s", rep, gen, labels)
	}
	if r := w.post("/ui/deployments/nope/scale", url.Values{"csrf": {token}, "replicas": {"1"}}); r.status != 404 {
		t.Fatalf("scale of an undeployed model: %d", r.status)
	}
	if r := w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "replicas": {"1"}, "memory": {"lots"}}); r.status != 400 || !strings.Contains(r.body, `value="lots"`) {
		t.Fatalf("bad memory: %d (the form should come back as typed)", r.status)
	}
	// autoscaling through the form, and a redeploy of the form as shown keeps it
	r = w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "replicas": {""}, "autoscale_min": {"1"},
		"autoscale_max": {"4"}, "autoscale_idle_to_zero": {"10m"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("deploy with autoscaling: %d %s", r.status, r.body)
	}
	notified("autoscale")
	var amin, amax int
	var idle int64
	e.db.Pool.QueryRow(context.Background(), `SELECT autoscale_min, autoscale_max, autoscale_idle_to_zero_ms FROM deployments`).Scan(&amin, &amax, &idle)
	if amin != 1 || amax != 4 || idle != 600000 {
		t.Fatalf("autoscale bounds %d..%d idle %dms", amin, amax, idle)
	}
	page = w.get("/ui/models/sentiment")
	var deployForm *formInfo
	for _, f := range formsOf(t, "/ui/models/sentiment", page.body) {
		if strings.HasSuffix(f.action, "/deploy") {
			deployForm = &f
		}
	}
	if deployForm == nil || deployForm.fields["autoscale_max"] != "4" || deployForm.fields["autoscale_idle_to_zero"] != "10m0s" {
		t.Fatalf("deploy form does not show the autoscaling: %+v", deployForm)
	}
	vals := url.Values{}
	for k, v := range deployForm.fields {
		vals.Set(k, v)
	}
	if r := w.post(deployForm.action, vals); r.status != http.StatusSeeOther {
		t.Fatalf("redeploy as shown: %d %s", r.status, r.body)
	}
	notified("redeploy")
	e.db.Pool.QueryRow(context.Background(), `SELECT autoscale_min, autoscale_max, autoscale_idle_to_zero_ms FROM deployments`).Scan(&amin, &amax, &idle)
	if amin != 1 || amax != 4 || idle != 600000 {
		t.Fatalf("a redeploy of the form as shown changed the autoscaling: %d..%d idle %dms", amin, amax, idle)
	}
	if page := w.get("/ui/deployments"); !strings.Contains(page.body, "1 to 4 replicas") || strings.Contains(page.body, "up to") {
		t.Errorf("deployments page: autoscaling not shown, or ±1 buttons on an autoscaled deployment")
	}
	if r := w.post("/ui/models/sentiment/deploy", url.Values{"csrf": {token}, "autoscale_max": {"4"}, "autoscale_idle_to_zero": {"soon"}}); r.status != 400 {
		t.Errorf("bad autoscale duration: %d", r.status)
	}

	r = w.post("/ui/deployments/sentiment/undeploy", url.Values{"csrf": {token}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("undeploy: %d", r.status)
	}
	notified("undeploy")
	if n := e.count(`SELECT count(*) FROM deployments`); n != 0 {
		t.Fatalf("%d deployments after undeploy", n)
	}
	if r := w.post("/ui/deployments/sentiment/undeploy", url.Values{"csrf": {token}}); r.status != 404 {
		t.Fatalf("second undeploy: %d", r.status)
	}
}

func TestWebAccountsKeysNodesUsage(t *testing.T) {
	e := newEnv(t)
	account, _ := webFixture(e)
	w, token := e.login()

	// names are escaped wherever they appear
	r := w.post("/ui/accounts", url.Values{"csrf": {token}, "name": {`<script>alert(1)</script>`}, "plan": {"standard"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("create account: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/ui/accounts", r.location} {
		b := w.get(p).body
		if strings.Contains(b, "<script>alert") || !strings.Contains(b, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s: account name not escaped", p)
		}
	}
	if r := w.post("/ui/accounts", url.Values{"csrf": {token}, "name": {"acme"}}); r.status != 409 {
		t.Errorf("duplicate account: %d", r.status)
	}

	page := w.get(fmt.Sprintf("/ui/accounts/%d", account)).body
	var kid int
	e.db.Pool.QueryRow(context.Background(), `SELECT id FROM api_keys`).Scan(&kid)
	for _, want := range []string{"acme", "first", "active", fmt.Sprintf(`action="/ui/accounts/%d/keys/%d/revoke"`, account, kid), "<svg", "sentiment:"} {
		if !strings.Contains(page, want) {
			t.Errorf("account page lacks %q", want)
		}
	}
	r = w.post(fmt.Sprintf("/ui/accounts/%d/keys/%d/revoke", account, kid), url.Values{"csrf": {token}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("revoke: %d", r.status)
	}
	if n := e.count(`SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL`); n != 1 {
		t.Fatalf("revoked: %d", n)
	}
	page = w.get(r.location).body
	if !strings.Contains(page, "Key revoked") || !strings.Contains(page, "badge-revoked") || strings.Contains(page, "/revoke\"") {
		t.Errorf("account page after revoke: revoked state or leftover revoke button")
	}
	if r := w.post(fmt.Sprintf("/ui/accounts/%d/keys/99999/revoke", account), url.Values{"csrf": {token}}); r.status != 404 {
		t.Errorf("revoke of a missing key: %d", r.status)
	}

	// usage: 30 days, today included; the fixture has usage every 3 days back to 40 days ago
	page = w.get("/ui/usage").body
	var want int64
	e.db.Pool.QueryRow(context.Background(), `SELECT sum(requests) FROM usage WHERE day > current_date - 30`).Scan(&want)
	if !strings.Contains(page, fmt.Sprintf("<strong>acme</strong>: %d requests", want)) {
		t.Errorf("usage page lacks acme's total %d", want)
	}
	if got := strings.Count(page, "<rect x="); got != 10 {
		t.Errorf("usage chart: %d bars, want 10 (days 0, 3, … 27)", got)
	}

	// nodes: the fake GPU with its bar, what was placed on it and what
	// else uses it: the agent saw the replica's process (pid 4242, which
	// the reconciler observed) and one nobody placed (pid 777, 1.5 GiB); a
	// CPU-only node says why it has no GPU
	ctx := context.Background()
	for _, q := range []string{
		`UPDATE gpus SET processes = '[{"pid":4242,"mem_used":2147483648},{"pid":777,"mem_used":1610612736}]'`,
		`UPDATE deployments SET observed = jsonb_set(observed, '{tasks,0,pid}', '4242')`,
		`INSERT INTO nodes (id, hostname, role, availability, state, labels, nano_cpus, memory_bytes, gpu_reason)
			VALUES ('cpunode00001', 'cpu-node', 'worker', 'active', 'ready', '{"type":"machine-learning"}', 4000000000, 8589934592,
			'NVML not available: libnvidia-ml.so.1 not found')`,
	} {
		if _, err := e.db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	page = w.get("/ui/nodes").body
	for _, want := range []string{"fake-gpu-node", "Fake GPU (test stand-in)", "16.0 GiB", "12.0 GiB", `width="40"`, "25% of memory in use", "37%", "sentiment</a> (2.0 GiB)", "sentiment</a> #1", "type=machine-learning",
		"Used by others", `1.5 GiB <span class="muted">(pid 777)</span>`, "cpu-node", "No GPUs reported: NVML not available: libnvidia-ml.so.1 not found."} {
		if !strings.Contains(page, want) {
			t.Errorf("nodes page lacks %q", want)
		}
	}
	if strings.Contains(page, "pid 4242") {
		t.Errorf("nodes page counts the platform's replica (pid 4242) as another's process")
	}
	// the JSON API tells the same
	code, body := e.do("GET", "/api/v1/nodes", adminTok, nil)
	for _, want := range []string{"placed:[map[memory_bytes:2.147483648e+09 model:sentiment]]", "other_memory_bytes:1.610612736e+09",
		"map[mem_used:2.147483648e+09 model:sentiment pid:4242]", "gpu_reason:NVML not available: libnvidia-ml.so.1 not found"} {
		if code != 200 || !strings.Contains(fmt.Sprint(body), want) {
			t.Errorf("nodes API: %d lacks %q: %v", code, want, body)
		}
	}
}

func TestUsageChartLayout(t *testing.T) {
	first := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	rows := []UsageRow{
		{Account: "b", Model: "ner", Day: "2026-03-01", Requests: 30},
		{Account: "b", Model: "sentiment", Day: "2026-03-01", Requests: 70},
		{Account: "b", Model: "sentiment", Day: "2026-03-30", Requests: 50},
		{Account: "a", Model: "ner", Day: "2026-03-15", Requests: 5},
		{Account: "a", Model: "ner", Day: "2026-04-01", Requests: 999}, // outside the window
	}
	if one := buildUsageCharts([]UsageRow{{Account: "c", Model: "m", Day: "2026-03-02", Requests: 1}}, first); len(one[0].Ticks) != 2 {
		t.Fatalf("ticks of a 1-request chart: %+v", one[0].Ticks)
	}
	charts := buildUsageCharts(rows, first)
	if len(charts) != 2 || charts[0].Account != "a" || charts[1].Account != "b" {
		t.Fatalf("charts %+v", charts)
	}
	b := charts[1]
	if b.Total != 150 || len(b.Days) != usageDays || len(b.Legend) != 2 || b.Legend[0].Model != "ner" {
		t.Fatalf("chart b: total %d days %d legend %+v", b.Total, len(b.Days), b.Legend)
	}
	day0 := b.Days[0]
	if len(day0.Segments) != 2 || day0.Total != 100 {
		t.Fatalf("first day %+v", day0)
	}
	// the 100-request day fills the plot (100 is a nice top); segments stack upwards
	if day0.Segments[0].H+day0.Segments[1].H != plotH || day0.Segments[1].Y+day0.Segments[1].H != day0.Segments[0].Y {
		t.Fatalf("segments %+v", day0.Segments)
	}
	if b.Days[29].Segments[0].H != plotH/2 || b.Days[29].Label != "03-30" || b.Days[0].Label != "03-01" || b.Days[1].Label != "" {
		t.Fatalf("last day %+v", b.Days[29])
	}
	if len(b.Ticks) != 6 || b.Ticks[5].Label != "100" || b.Ticks[1].Label != "20" || b.Ticks[0].Label != "0" {
		t.Fatalf("ticks %+v", b.Ticks)
	}
	for n, want := range map[int64]int64{0: 1, 1: 1, 7: 10, 10: 10, 11: 20, 150: 200, 300: 500, 999: 1000} {
		if got := niceCeil(n); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", n, got, want)
		}
	}
}
