package apiserver

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
)

// After authFailureBurst wrong tokens from one address, its wrong tokens
// are refused with 429 and Retry-After, on the JSON API, the internal
// endpoints and the login page alike; the right token still passes from
// that address (issue 17 finding 8: one bad token every 6 s from a stranger
// behind the admin's NAT locked the admin out), other addresses are not
// affected, and the address gets a new try once its budget refills.
func TestTokenGuessingIsSlowed(t *testing.T) {
	e := newEnv(t)
	clock := time.Now()
	e.srv.authFails.now = func() time.Time { return clock }
	api := func(addr, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/plans", nil)
		req.RemoteAddr = addr + ":40000"
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", "10.9.9.9") // written by the client: not trusted
		w := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(w, req)
		return w
	}
	for i := range authFailureBurst {
		if w := api("192.0.2.1", "guess"); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d", i+1, w.Code)
		}
	}
	w := api("192.0.2.1", "guess")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "too_many_attempts") {
		t.Fatalf("after %d wrong tokens: %d %q %s", authFailureBurst, w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := api("192.0.2.1", adminTok); w.Code != http.StatusOK {
		t.Fatalf("the admin behind the guessing address is locked out: %d %s", w.Code, w.Body)
	}
	if w := api("192.0.2.2", "guess"); w.Code != http.StatusUnauthorized {
		t.Fatalf("another address: %d %s", w.Code, w.Body)
	}
	// the internal endpoints share the budget of the address
	zeroDigest := "sha256:" + strings.Repeat("0", 64)
	internal := func(tok string) int {
		req := httptest.NewRequest(http.MethodHead, "/internal/blobs/"+zeroDigest, nil)
		req.RemoteAddr = "192.0.2.1:40001"
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		e.srv.InternalHandler().ServeHTTP(rec, req)
		return rec.Code
	}
	if code := internal("guess"); code != http.StatusTooManyRequests {
		t.Fatalf("internal endpoint, wrong token from a guessing address: %d", code)
	}
	if code := internal(artifactcred.Mint(artifactcred.Key(internalTok), zeroDigest, time.Now().Add(time.Hour))); code == http.StatusTooManyRequests || code == http.StatusUnauthorized {
		t.Fatalf("internal endpoint, right token from a guessing address: %d", code)
	}
	clock = clock.Add(authFailureEvery)
	if w := api("192.0.2.1", "guess"); w.Code != http.StatusUnauthorized {
		t.Fatalf("one more guess after the refill: %d", w.Code)
	}
	if w := api("192.0.2.1", "guess"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("a second guess right after: %d", w.Code)
	}

	// the login page: this test's server sees every request from 127.0.0.1
	wc := e.webClient()
	r := wc.get("/ui/login")
	csrf := csrfOf(t, r.body)
	for i := range authFailureBurst {
		if r := wc.post("/ui/login", url.Values{"token": {"guess"}, "csrf": {csrf}}); r.status != http.StatusUnauthorized {
			t.Fatalf("wrong login %d: %d", i+1, r.status)
		}
	}
	r = wc.post("/ui/login", url.Values{"token": {"guess"}, "csrf": {csrf}})
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "Too many wrong tokens") || r.header.Get("Retry-After") == "" {
		t.Fatalf("login after %d wrong tokens: %d %s", authFailureBurst, r.status, r.body)
	}
	if r := wc.post("/ui/login", url.Values{"token": {adminTok}, "csrf": {csrf}}); r.status != http.StatusSeeOther {
		t.Fatalf("the admin's login from the throttled address: %d", r.status)
	}
}

// The table of addresses stays bounded under a flood from many addresses.
func TestAuthFailuresBounded(t *testing.T) {
	a := newAuthFailures()
	for i := range authFailureAddrs + 500 {
		a.failed("addr-" + strconv.Itoa(i))
	}
	if n := len(a.addrs); n > authFailureAddrs {
		t.Fatalf("%d addresses kept, at most %d", n, authFailureAddrs)
	}
}

// reset forgets every address (tests that try many wrong tokens on purpose).
func (a *authFailures) reset() {
	a.mu.Lock()
	clear(a.addrs)
	a.mu.Unlock()
}
