package gateway

import (
	"bufio"
	"bytes"
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
		res, err := p.post(ctx, time.Time{}, "/predict", "rid-1", "", []byte(`{"x":1}`), false)
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
	if res, err := p.post(ctx, time.Time{}, "/predict", "rid-2", "", []byte(`{}`), false); err != nil || res.status != 200 {
		t.Fatalf("after the replica closed the kept-alive connection: %+v %v", res, err)
	}
	// a connection idle past idleTimeout is not reused
	p.idleTimeout = time.Millisecond
	before := conns.Load()
	time.Sleep(5 * time.Millisecond)
	if _, err := p.post(ctx, time.Time{}, "/predict", "rid-3", "", []byte(`{}`), false); err != nil {
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
	_, err := p.post(ctx, time.Time{}, "/predict", "rid", "", []byte(`{}`), false)
	if err != context.Canceled || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled request: %v after %s", err, time.Since(start))
	}
	if len(p.idle) != 0 {
		t.Fatal("an interrupted connection went back to the pool")
	}
}

// The in-place parse of an answer head takes the plain answers and leaves
// the rest to http.ReadResponse.
func TestParseHead(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
		want     answerHead
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":true}\r\n", true,
			answerHead{size: 71, status: 200, contentType: "application/json", length: 12}},
		{"no reason, case and spaces", "HTTP/1.1 503\r\ncontent-length:  0 \r\nconnection: keep-alive, Close\r\n\r\n", true,
			answerHead{size: 68, status: 503, length: 0, close: true}},
		{"first Content-Type wins", "HTTP/1.1 400 Bad\r\nContent-Type: a\r\nContent-Type: b\r\nContent-Length: 1\r\n\r\nx", true,
			answerHead{size: 73, status: 400, contentType: "a", length: 1}},
		{"first Content-Type wins, even empty", "HTTP/1.1 200 \r\nContent-Type:\r\nContent-Type: b\r\nContent-Length: 0\r\n\r\n", true,
			answerHead{size: 68, status: 200, contentType: "", length: 0}},
		{"head not whole yet", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false, answerHead{}},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", false, answerHead{}},
		{"no length", "HTTP/1.1 200 OK\r\nContent-Type: a\r\n\r\n", false, answerHead{}},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false, answerHead{}},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", false, answerHead{}},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, answerHead{}},
		{"1xx", "HTTP/1.1 100 Continue\r\n\r\n", false, answerHead{}},
		{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false, answerHead{}},
		{"folded line", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n x\r\n\r\nx", false, answerHead{}},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", false, answerHead{}},
		{"control byte in a value", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: a\x00b\r\n\r\nx", false, answerHead{}},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\nx", false, answerHead{}},
	} {
		h, ok := parseHead([]byte(c.in))
		if ok != c.ok || (ok && h != c.want) {
			t.Errorf("%s: got %+v %v, want %+v %v", c.name, h, ok, c.want, c.ok)
		}
		if !ok { // the slow path still reads what is valid
			continue
		}
		checkHeadAgainstReadResponse(t, []byte(c.in), h)
	}
}

// Wherever parseHead takes a head, http.ReadResponse reads the same status,
// Content-Type, length, connection fate and body offset from it.
func FuzzParseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, ok := parseHead(data); ok {
			checkHeadAgainstReadResponse(t, data, h)
		}
	})
}

func checkHeadAgainstReadResponse(t *testing.T, data []byte, h answerHead) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
	if err != nil {
		t.Fatalf("parseHead took %q, http.ReadResponse refused it: %v", data, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != h.status || resp.Header.Get("Content-Type") != h.contentType || resp.ContentLength != h.length || resp.Close != h.close {
		t.Fatalf("%q: parseHead %+v, http.ReadResponse status %d type %q length %d close %v",
			data, h, resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, resp.Close)
	}
	body, _ := io.ReadAll(resp.Body)
	want := data[h.size:]
	if int64(len(want)) > h.length {
		want = want[:h.length]
	}
	if !bytes.Equal(body, want) {
		t.Fatalf("%q: body at offset %d is %q, http.ReadResponse read %q", data, h.size, want, body)
	}
}
