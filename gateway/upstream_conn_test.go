package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The pool keeps connections alive across requests, sends the request ID and
// body as given, and survives a replica that closes idle connections (the
// stale connection's request is sent again on a fresh one).
func TestConnPoolKeepAliveAndStale(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-ID", r.Header.Get("X-Request-ID"))
		w.Write([]byte(`{"path":"` + r.URL.Path + `","body":` + string(b) + `,"id":"` + r.Header.Get("X-Request-ID") + `"}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := &connPool{addr: srv.Listener.Addr().String(), dial: (&net.Dialer{}).DialContext, idleTimeout: time.Minute, maxIdle: 4}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		res, err := p.post(ctx, "/predict", "rid-1", []byte(`{"x":1}`))
		if err != nil || res.status != 200 || string(res.body) != `{"path":"/predict","body":{"x":1},"id":"rid-1"}` || res.contentType != "application/json" {
			t.Fatalf("request %d: %+v %v", i, res, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests opened %d connections, want 1", n)
	}
	// the replica drops its idle connections (a restart, its idle timeout)
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if res, err := p.post(ctx, "/predict", "rid-2", []byte(`{}`)); err != nil || res.status != 200 {
		t.Fatalf("after the replica closed the kept-alive connection: %+v %v", res, err)
	}
	// a connection idle past idleTimeout is not reused
	p.idleTimeout = time.Millisecond
	before := conns.Load()
	time.Sleep(5 * time.Millisecond)
	if _, err := p.post(ctx, "/predict", "rid-3", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if conns.Load() != before+1 {
		t.Fatal("a connection idle past the idle timeout was reused")
	}
	p.close()
	if len(p.idle) != 0 {
		t.Fatal("close kept idle connections")
	}
}

// A cancelled context interrupts a request in flight and the connection is
// not reused.
func TestConnPoolCancel(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p := &connPool{addr: srv.Listener.Addr().String(), dial: (&net.Dialer{}).DialContext, idleTimeout: time.Minute, maxIdle: 4}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := p.post(ctx, "/predict", "rid", []byte(`{}`))
	if err != context.Canceled || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled request: %v after %s", err, time.Since(start))
	}
	if len(p.idle) != 0 {
		t.Fatal("an interrupted connection went back to the pool")
	}
}
