package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// The bare proxies: benchmark-only ceilings for BenchmarkPinned
// (NLPSWARM_PINNED_FRONTENDS=...,bare-fast,bare-adapter,bare-nethttp). Each
// is a reverse proxy with none of the gateway's work: no key, no limit, no
// JSON translation, no usage, no metrics, no request ID; it sends each
// POST's body as it is to the upstream's /predict and relays the answer's
// status, Content-Type and body. bare-fast is fasthttp's server and its
// HostClient, bare-nethttp net/http's server and Transport, bare-adapter
// the gateway's own fast front end (fasthttp seen through net/http's types)
// and upstream client. What a bare proxy serves on one pinned core bounds
// what any gateway on the same server and client could: the gateway's
// features only add to it.
//
// They run in TestBenchGatewayProcess's process (GOMAXPROCS=1, pinned, as
// the gateways), started by startGatewayProcessOn with the front end
// "bare-fast" or "bare-nethttp".

// serveBare runs the bare proxy named front to upstream on 127.0.0.1:0,
// writes its address to addrFile and serves until stdin closes.
func serveBare(t *testing.T, front, upstream, addrFile string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	switch front {
	case "bare-fast":
		hc := &fasthttp.HostClient{Addr: upstream, MaxConns: 1024, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		srv := &fasthttp.Server{
			Handler: func(ctx *fasthttp.RequestCtx) {
				req := fasthttp.AcquireRequest()
				defer fasthttp.ReleaseRequest(req)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.SetRequestURI("/predict")
				req.Header.SetHost(upstream)
				req.Header.SetContentType("application/json")
				req.SetBodyRaw(ctx.PostBody())
				if err := hc.Do(req, &ctx.Response); err != nil {
					ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
				}
			},
			NoDefaultServerHeader: true,
			NoDefaultDate:         true,
			ReadTimeout:           10 * time.Second,
			IdleTimeout:           time.Minute,
		}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Shutdown()
	case "bare-nethttp":
		tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
		url := "http://" + upstream + "/predict"
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, url, bytes.NewReader(body))
				req.Header["Content-Type"] = []string{"application/json"}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
					return
				}
				defer resp.Body.Close()
				w.Header()["Content-Type"] = resp.Header["Content-Type"]
				w.WriteHeader(resp.StatusCode)
				_, _ = io.Copy(w, resp.Body)
			}),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
		}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	case "bare-adapter":
		// the gateway's fast front end (fasthttp through serveFast's
		// http.Request, fastWriter and client-gone context) and its own
		// upstream client (connPool), with none of the gateway's work
		// between them: against bare-fast, what the net/http view and the
		// upstream client cost; against the gateway on fasthttp, what its
		// work costs
		pool := &connPool{addr: upstream, dial: (&net.Dialer{}).DialContext, idleTimeout: time.Minute, maxIdle: 1024}
		bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			buf := bufs.Get().(*bytes.Buffer)
			defer func() { buf.Reset(); bufs.Put(buf) }()
			if _, err := buf.ReadFrom(io.LimitReader(r.Body, 1<<20)); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			ans, err := pool.post(r.Context(), time.Now().Add(10*time.Second), "/predict", "bare", "", buf.Bytes(), false)
			if err != nil {
				http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
				return
			}
			w.Header()["Content-Type"] = []string{ans.contentType}
			w.WriteHeader(ans.status)
			_, _ = w.Write(ans.body)
		})
		srv := newFastServer(httpserver.Options{ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute}, Config{}, h, nil)
		go func() { _ = srv.Serve(ln) }()
		defer srv.Shutdown(context.Background())
	default:
		t.Fatalf("no bare proxy %q: want bare-fast, bare-adapter or bare-nethttp", front)
	}
	if err := os.WriteFile(addrFile+".tmp", []byte(ln.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
}
