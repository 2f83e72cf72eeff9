package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// sqlInjections are classic injection strings; every text field must treat
// them as text.
var sqlInjections = []string{
	`' OR '1'='1`,
	`'; DROP TABLE api_keys; --`,
	`x' UNION SELECT hash FROM api_keys --`,
	`1; UPDATE api_keys SET revoked_at = NULL`,
	`\'; SELECT pg_sleep(5); --`,
	`$$; DROP TABLE models; $$`,
	"\x00' OR 1=1",
}

// TestHostilePathsAndKeys: model names with path traversal, encoded slashes,
// NULs and SQL, and API keys made of SQL, are refused with a 4xx and a
// machine-readable code; none reaches a runtime, none is a 5xx, and the
// tables they aim at are intact.
func TestHostilePathsAndKeys(t *testing.T) {
	e := newEnv(t, false)
	acme := e.account("acme", "standard")
	key, _ := e.key(acme, "inference")
	rt := newRuntime(t, "text-classification")
	e.model("public", "text-classification", 0, rt)
	e.model("secret", "text-classification", acme, newRuntime(t, "text-classification"))
	e.start(Config{})
	count := func(table string) int64 { return e.id(`SELECT count(*) FROM ` + table) }
	keys0, models0 := count("api_keys"), count("models")

	raw := func(method, path, auth, body string) (int, string) {
		t.Helper()
		// a raw request line: the client must not clean the path for us
		c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			method, path, auth, len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	paths := []string{
		"/v1/../public/sentiment",
		"/v1/..%2fpublic/sentiment",
		"/v1/%2e%2e%2f%2e%2e%2fetc%2fpasswd/sentiment",
		"/v1/public%2f..%2fsecret/sentiment",
		"/v1/public%00/sentiment",
		"/v1/" + url.PathEscape(`public' OR '1'='1`) + "/sentiment",
		"/v1/" + url.PathEscape(`x'; DROP TABLE models; --`) + "/sentiment",
		"/v1/" + strings.Repeat("a", 8000) + "/sentiment",
		"/v2/models/..%2f..%2fpredict/infer",
		"/v2/models/public%2f..%2f..%2fpredict/infer",
		"/v2/models/" + url.PathEscape(`' OR 1=1 --`) + "/infer",
		"/v1/public/..%2f..%2fpredict",
		"//v1/public/sentiment",
	}
	hits := rt.hits.Load()
	for _, p := range paths {
		code, body := raw("POST", p, "Token "+key, `{"text":"x"}`)
		if code < 300 || code >= 500 || (code >= 400 && !strings.Contains(body, `"code"`)) {
			t.Errorf("POST %.60s: %d %.200s, want a 3xx redirect to a clean path or a 4xx with a code", p, code, body)
		}
	}
	if got := rt.hits.Load() - hits; got != 0 {
		t.Errorf("%d hostile paths reached the runtime", got)
	}
	for _, inj := range sqlInjections {
		for _, auth := range []string{"Token " + inj, "Token nlp_abcdefgh_" + inj, "Bearer " + inj} {
			code, body := raw("POST", "/v1/public/sentiment", strings.ReplaceAll(auth, "\x00", ""), `{"text":"x"}`)
			if code != 401 {
				t.Errorf("key %q: %d %s, want 401", auth, code, body)
			}
		}
		// as text it is just text
		text, _ := json.Marshal(map[string]string{"text": inj})
		a := e.post(key, "/v1/public/sentiment", string(text))
		if a.status != 200 {
			t.Errorf("text %q: %d %s", inj, a.status, a.raw)
		}
	}
	if count("api_keys") != keys0 || count("models") != models0 {
		t.Fatalf("tables changed: api_keys %d→%d, models %d→%d", keys0, count("api_keys"), models0, count("models"))
	}
	// the private model stays private whatever the path games
	other, _ := e.key(e.account("other", "standard"), "inference")
	for _, p := range []string{"/v1/secret/sentiment", "/v1/SECRET/sentiment", "/v1/secret%20/sentiment", "/v2/models/secret/infer"} {
		if code, body := raw("POST", p, "Token "+other, `{"text":"x"}`); code != 404 {
			t.Errorf("other tenant on %s: %d %s, want 404", p, code, body)
		}
	}
}

// TestForgedHeaders: two Authorization headers (one valid, one another
// tenant's), forged request IDs and forwarding headers, and headers over the
// server's limit are each answered as they should be.
func TestForgedHeaders(t *testing.T) {
	e := newEnv(t, false)
	acme := e.account("acme", "standard")
	acmeKey, _ := e.key(acme, "inference")
	otherKey, _ := e.key(e.account("other", "standard"), "inference")
	rt := newRuntime(t, "text-classification")
	e.model("secret", "text-classification", acme, rt)
	e.start(Config{})
	addr := listenGateway(t, e.gw, httpserver.Options{})

	send := func(headers string, body string) (int, http.Header, string) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/secret/sentiment HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s", len(body), headers, body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	body := `{"text":"x"}`
	// two credentials: which one would a proxy in front have checked? Refuse.
	for _, hs := range []string{
		"Authorization: Token " + otherKey + "\r\nAuthorization: Token " + acmeKey + "\r\n",
		"Authorization: Token " + acmeKey + "\r\nAuthorization: Token " + otherKey + "\r\n",
	} {
		if code, _, b := send(hs, body); code != 400 || !strings.Contains(b, "more than one Authorization header") {
			t.Errorf("two Authorization headers: %d %s, want 400", code, b)
		}
	}
	// forwarding headers grant nothing
	if code, _, b := send("Authorization: Token "+otherKey+"\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-User: acme\r\n", body); code != 404 {
		t.Errorf("forwarding headers: %d %s, want 404", code, b)
	}
	// a request ID that is too long or not printable is replaced, not echoed
	for _, rid := range []string{strings.Repeat("r", 4000), "abc\x01def", "<script>alert(1)</script>" + strings.Repeat("x", 200)} {
		code, h, b := send("Authorization: Token "+acmeKey+"\r\nX-Request-ID: "+rid+"\r\n", body)
		if code != 200 && code != 400 {
			t.Errorf("request id %.20q: %d %s", rid, code, b)
		}
		if got := h.Get("X-Request-ID"); code == 200 && (got == rid || len(got) > 128) {
			t.Errorf("request id %.20q echoed back: %.40q", rid, got)
		}
	}
	// CR/LF smuggled into a header value is a malformed request
	if code, _, b := send("Authorization: Token "+acmeKey+"\r\nX-Request-ID: a\rInjected: 1\r\n", body); code != 400 {
		t.Errorf("CR in a header value: %d %s, want 400", code, b)
	}
	// headers over the limit (64 KiB) get 431, the key is never looked at
	if code, _, _ := send("Authorization: Token "+acmeKey+"\r\nX-Big: "+strings.Repeat("b", 100<<10)+"\r\n", body); code != 431 {
		t.Errorf("100 KiB header: %d, want 431", code)
	}
	if code, _, _ := send("Authorization: Token "+strings.Repeat("k", 100<<10)+"\r\n", body); code != 431 {
		t.Errorf("100 KiB Authorization header: %d, want 431", code)
	}
	// many headers, each small, add up to the same limit
	var many strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&many, "X-H%d: %s\r\n", i, strings.Repeat("v", 20))
	}
	if code, _, _ := send("Authorization: Token "+acmeKey+"\r\n"+many.String(), body); code != 431 {
		t.Errorf("5000 headers: %d, want 431", code)
	}
	// and after all that, an honest request is served
	if code, _, b := send("Authorization: Token "+acmeKey+"\r\n", body); code != 200 {
		t.Errorf("honest request: %d %s", code, b)
	}
}

// TestSlowClients: slowloris headers and bodies trickled a byte at a time are
// cut off by the server's timeouts (a slow body gets 408), and while fifty
// of them hang on, an honest request is served at once.
func TestSlowClients(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	opts := httpserver.Options{ReadHeaderTimeout: 500 * time.Millisecond, ReadTimeout: 1500 * time.Millisecond}
	e.start(Config{BodyTimeout: opts.ReadTimeout}) // (the gateway role clamps its body deadline to the read timeout)
	addr := listenGateway(t, e.gw, opts)

	// trickle writes the request a byte every interval until the server
	// closes the connection, and returns when that happened and what it said
	trickle := func(prefix, rest string, interval time.Duration) (time.Duration, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		if _, err := io.WriteString(c, prefix); err != nil {
			t.Fatal(err)
		}
		answer := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(c)
			answer <- string(b)
		}()
		for i := 0; i < len(rest); i++ {
			select {
			case a := <-answer:
				return time.Since(start), a
			case <-time.After(interval):
			}
			if _, err := c.Write([]byte{rest[i]}); err != nil {
				break
			}
		}
		select {
		case a := <-answer:
			return time.Since(start), a
		case <-time.After(10 * time.Second):
			return time.Since(start), "(no answer, connection still open)"
		}
	}
	body := `{"text":"` + strings.Repeat("slow ", 40) + `"}`
	headers := "POST /v1/public/sentiment HTTP/1.1\r\nHost: x\r\nAuthorization: Token " + key + "\r\nContent-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n", len(body))

	took, ans := trickle("POST /v1/public/sentiment HTTP/1.1\r\n", "Host: x\r\nX-Slow: "+strings.Repeat("s", 200)+"\r\n\r\n", 100*time.Millisecond)
	t.Logf("slowloris headers: connection closed after %s, answer %.60q", took.Round(10*time.Millisecond), ans)
	if took > opts.ReadHeaderTimeout+time.Second || strings.Contains(ans, "200 OK") {
		t.Errorf("slow headers held the connection %s (read header timeout %s): %q", took, opts.ReadHeaderTimeout, ans)
	}
	took, ans = trickle(headers+"\r\n", body, 100*time.Millisecond)
	t.Logf("slow body: answered after %s: %.80q", took.Round(10*time.Millisecond), ans)
	if took > opts.ReadTimeout+time.Second || !strings.HasPrefix(ans, "HTTP/1.1 408") || !strings.Contains(ans, `"code":"request_timeout"`) {
		t.Errorf("slow body: after %s (read timeout %s): %q, want 408 request_timeout", took, opts.ReadTimeout, ans)
	}

	// fifty slow clients hang on; an honest request is still served promptly
	var conns []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		io.WriteString(c, headers+"\r\n{")
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/public/sentiment", strings.NewReader(`{"text":"hi"}`))
	req.Header.Set("Authorization", "Token "+key)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("honest request beside 50 slow clients: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || time.Since(start) > time.Second {
		t.Errorf("honest request beside 50 slow clients: %d after %s", resp.StatusCode, time.Since(start))
	}
}

// listenGateway serves g through the platform's HTTP server (its timeouts
// and header limit) on a loopback port until the test ends.
func listenGateway(t *testing.T, g http.Handler, opts httpserver.Options) string {
	t.Helper()
	opts.Listen = "127.0.0.1:0"
	opts.DrainDelay = time.Millisecond
	opts.ShutdownTimeout = time.Second
	log := slog.New(slog.DiscardHandler)
	var engine httpserver.EngineFunc // the front end under test (serveFrontend)
	if testFrontend == FrontendFast {
		var cfg Config
		if gw, ok := g.(*Gateway); ok {
			cfg = gw.opts.Config
		}
		engine = FastEngine(cfg, log)
	}
	srv, err := httpserver.ListenEngine(opts, engine, g, httpserver.NewHealth(), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.Addr()
}

// stalled opens a connection that declares a body of declared bytes for
// path, sends sent of them and stalls; it is closed when the test ends.
func stalled(t *testing.T, addr, key, path string, declared, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Token %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, key, declared, strings.Repeat(" ", sent))
	return c
}

// answerOf reads the answer on c, or fails when none comes within d.
func answerOf(t *testing.T, c net.Conn, d time.Duration) (int, http.Header, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil, "(no answer: " + err.Error() + ")"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestDeclaredLengthNotPreallocated: a hundred requests that each declare
// the largest body and send none of it cost the gateway their few bytes,
// not the 100 MiB they declared.
func TestDeclaredLengthNotPreallocated(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{MaxInflightBytes: 1 << 30})
	addr := listenGateway(t, g, httpserver.Options{})
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := 0; i < 100; i++ {
		stalled(t, addr, key, "/v1/public/sentiment", 1<<20, 1)
	}
	waitFor(t, "100 bodies being read", 10*time.Second, func() bool { return g.bodies.n.Load() == 100<<20 })
	grew := int64(heap()) - int64(before)
	t.Logf("heap grew %d KiB for 100 stalled requests declaring 1 MiB each", grew>>10)
	if grew > 20<<20 {
		t.Errorf("heap grew %d MiB: the declared Content-Length was allocated before the bytes arrived", grew>>20)
	}
}

// TestBodyDeadline: a body trickled in is cut off at the gateway's body
// deadline (408), long before the server's read timeout.
func TestBodyDeadline(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{BodyTimeout: time.Second})
	addr := listenGateway(t, g, httpserver.Options{ReadTimeout: 30 * time.Second})
	start := time.Now()
	c := stalled(t, addr, key, "/v1/public/sentiment", 100, 10)
	code, _, body := answerOf(t, c, 5*time.Second)
	if code != 408 || !strings.Contains(body, `"code":"request_timeout"`) || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled body: %d %q after %s, want 408 request_timeout after about 1s", code, body, time.Since(start))
	}
}

// TestInflightCaps: stalled requests from one key fill its in-flight cap
// (429 too_many_inflight beyond) and the gateway's body-byte cap (503
// overloaded beyond), the byte count never passes its cap, and another
// key is still served.
func TestInflightCaps(t *testing.T) {
	e := newEnv(t, false)
	a, _ := e.key(e.account("acme", "free"), "inference")
	c2, _ := e.key(e.account("corp", "free"), "inference")
	b, _ := e.key(e.account("other", "standard"), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	const capBytes = 3<<20 + 512<<10
	g := e.start(Config{MaxInflightPerKey: 4, MaxInflightBytes: capBytes})
	addr := listenGateway(t, g, httpserver.Options{})
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := g.bodies.n.Load(); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	defer close(stop)

	// key a: four stalled 512 KiB bodies are being read; the fifth is refused
	for i := 0; i < 4; i++ {
		stalled(t, addr, a, "/v1/public/sentiment", 512<<10, 1)
	}
	waitFor(t, "4 bodies of key a", 5*time.Second, func() bool { return g.bodies.n.Load() == 2<<20 })
	code, h, body := answerOf(t, stalled(t, addr, a, "/v1/public/sentiment", 512<<10, 1), 3*time.Second)
	if code != 429 || !strings.Contains(body, `"too_many_inflight"`) || h.Get("Retry-After") == "" {
		t.Errorf("fifth request of one key: %d %v %s, want 429 too_many_inflight with Retry-After", code, h, body)
	}
	// key c2: one 1 MiB body fits under the byte cap, the second does not
	stalled(t, addr, c2, "/v2/models/public/infer", 1<<20, 1)
	waitFor(t, "the 1 MiB body of key c2", 5*time.Second, func() bool { return g.bodies.n.Load() == 3<<20 })
	code, h, body = answerOf(t, stalled(t, addr, c2, "/v1/public/sentiment", 1<<20, 1), 3*time.Second)
	if code != 503 || !strings.Contains(body, `"overloaded"`) || h.Get("Retry-After") == "" {
		t.Errorf("body past the byte cap: %d %v %s, want 503 overloaded with Retry-After", code, h, body)
	}
	// another key with a small body is served meanwhile
	if ans := e.post(b, "/v1/public/sentiment", `{"text":"hi"}`); ans.status != 200 {
		t.Errorf("another key beside the stalled ones: %d %s", ans.status, ans.raw)
	}
	if p := peak.Load(); p > capBytes {
		t.Errorf("in-flight body bytes peaked at %d, over the cap %d", p, capBytes)
	}
}

// TestInferTextLimitAndMetering: the v2 infer route keeps the task API's
// text limit and meters its texts.
func TestInferTextLimitAndMetering(t *testing.T) {
	e := newEnv(t, false)
	key, keyID := e.key(e.account("acme", "standard"), "inference")
	modelID := e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{})
	infer := func(n int) answer {
		texts, _ := json.Marshal(strings.Split(strings.Repeat("x,", n-1)+"x", ","))
		return e.post(key, "/v2/models/sentiment/infer", fmt.Sprintf(`{"inputs":[{"name":"text","shape":[%d],"datatype":"BYTES","data":%s}]}`, n, texts))
	}
	if a := infer(65); a.status != 400 || a.code() != "invalid_request" {
		t.Errorf("65 texts through v2 infer: %d %s, want 400 invalid_request", a.status, a.raw)
	}
	if a := infer(3); a.status != 200 {
		t.Fatalf("3 texts through v2 infer: %d %s", a.status, a.raw)
	}
	if err := g.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	var texts int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT coalesce(sum(texts),0) FROM usage WHERE api_key_id=$1 AND model_id=$2`, keyID, modelID).Scan(&texts); err != nil {
		t.Fatal(err)
	}
	if texts != 3 {
		t.Errorf("v2 infer metered %d texts, want 3", texts)
	}
}

// TestUnknownKeyFlood: a flood of unknown keys from one address is
// throttled (429 too_many_unauthorized after its burst of 401s, without a
// lookup), the same unknown key is answered from the negative cache, and a
// valid key, cached, is served throughout, from that same address too.
func TestUnknownKeyFlood(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("public", "text-classification", 0, newRuntime(t, "text-classification"))
	g := e.start(Config{UnauthorizedBurst: 10, UnauthorizedRate: 0.1})
	if a := e.post(key, "/v1/public/sentiment", `{"text":"x"}`); a.status != 200 {
		t.Fatalf("valid key: %d %s", a.status, a.raw)
	}
	var n401, n429 int
	for i := 0; i < 40; i++ {
		unknown, _, _, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		a := e.post(unknown, "/v1/public/sentiment", `{"text":"x"}`)
		switch {
		case a.status == 401:
			n401++
		case a.status == 429 && a.code() == "too_many_unauthorized" && a.header.Get("Retry-After") != "":
			n429++
		default:
			t.Fatalf("unknown key %d: %d %s", i, a.status, a.raw)
		}
		if v := e.post(key, "/v1/public/sentiment", `{"text":"x"}`); v.status != 200 {
			t.Fatalf("valid key during the flood: %d %s", v.status, v.raw)
		}
	}
	if n401 > 11 || n429 < 29 {
		t.Errorf("flood of 40 unknown keys: %d answered 401, %d throttled; want at most the burst (10) looked up", n401, n429)
	}
	// the negative cache is its own: filling it evicts no valid key
	for i := 0; i < maxNegativeKeys+10; i++ {
		g.keys.remember(fmt.Sprintf("unknown%d", i), nil, time.Now())
	}
	g.keys.mu.Lock()
	valid := len(g.keys.cache)
	g.keys.mu.Unlock()
	if valid != 1 {
		t.Errorf("after a negative-cache flood the positive cache holds %d keys, want the 1 valid key", valid)
	}
}
