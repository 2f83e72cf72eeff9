package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// The customer API's HTTP/1.1 server (Config.Frontend): fasthttp's
// (FrontendFast: one goroutine per connection, no background read, pooled
// request and response state, buffered writes; opt-in: on one pinned core
// it serves about 0.6× nginx's req/s, net/http's about 0.5×, short of the 0.8× set
// for making it the default, BENCHMARKS.md) or net/http's.
// Both serve the same http.Handler; the fast one through fastWriter and a
// per-request http.Request filled from fasthttp's parsed request, in the
// connection's own goroutine.
const (
	FrontendFast    = "fast"
	FrontendNetHTTP = "nethttp"
)

// FastEngine is the fast front end as an httpserver.Engine, with opts's
// timeouts and the gateway's body cap.
func FastEngine(cfg Config, log *slog.Logger) httpserver.EngineFunc {
	return func(opts httpserver.Options, h http.Handler) httpserver.Engine {
		return newFastServer(opts, cfg, h, log)
	}
}

type fastServer struct{ srv *fasthttp.Server }

func (s fastServer) Serve(ln net.Listener) error { return s.srv.Serve(remoteListener{ln}) }

// remoteListener gives each connection its remote address as a string,
// made once (serveFast's http.Request.RemoteAddr, for every request on the
// connection: TCPAddr.String allocates three times).
type remoteListener struct{ net.Listener }

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &remoteConn{Conn: c, remote: c.RemoteAddr().String()}, nil
}

// remoteConn is an accepted connection with its remote address's string;
// it passes on what the front end uses of the connection beneath
// (peerGone's SyscallConn, lingerClose's CloseWrite).
type remoteConn struct {
	net.Conn
	remote string
}

func (c *remoteConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *remoteConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (s fastServer) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

func newFastServer(opts httpserver.Options, cfg Config, h http.Handler, log *slog.Logger) fastServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := httpserver.Defaults("")
	read, head := opts.ReadTimeout, opts.ReadHeaderTimeout
	if read <= 0 {
		read = d.ReadTimeout
	}
	if head <= 0 || head > read {
		head = min(d.ReadHeaderTimeout, read)
	}
	// what precedes the handler's own body deadline: the pre-read byte
	bodyRead := read
	if cfg.BodyTimeout > 0 && cfg.BodyTimeout < read {
		bodyRead = cfg.BodyTimeout
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) { serveFast(ctx, h) },
		// the head within ReadHeaderTimeout of its first byte, then the
		// body within ReadTimeout (the handler shortens it to the body
		// deadline as it starts reading)
		ReadTimeout: head,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: bodyRead}
		},
		WriteTimeout: opts.WriteTimeout,
		IdleTimeout:  opts.IdleTimeout,
		// as net/http's MaxHeaderBytes (64 KiB): longer heads get 431
		ReadBufferSize: 64 << 10,
		// The body as a stream that the handler reads as it arrives, with
		// the gateway's cap (413) and body deadline (408), never
		// preallocated from Content-Length: fasthttp calls the handler at
		// once for a body longer than its own limit, so that limit is one
		// byte (its pre-read; it would otherwise wait for up to 8 KiB of
		// the body before the handler, and the request would hold no place
		// against the in-flight caps meanwhile).
		StreamRequestBody: true,
		// every answer flushed before the next request's handler runs,
		// pipelined or not: a streamed answer (fastWriter) writes to the
		// connection itself and must find nothing left in fasthttp's writer
		ReduceMemoryUsage:             true,
		MaxRequestBodySize:            1,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		ErrorHandler:                  fastError,
		Logger:                        fastLogger{log},
		Name:                          "",
	}
	return fastServer{srv: srv}
}

type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}

// fastError answers what fasthttp refuses before the handler, in the API's
// error shape and with net/http's statuses for the same refusals.
func fastError(ctx *fasthttp.RequestCtx, err error) {
	status, code, msg := http.StatusBadRequest, "invalid_request", "malformed HTTP request"
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		status, code, msg = http.StatusRequestHeaderFieldsTooLarge, "invalid_request", "request header too large"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, code, msg = http.StatusRequestEntityTooLarge, "payload_too_large", "body too large"
	case errors.As(err, &ne) && ne.Timeout():
		status, code, msg = http.StatusRequestTimeout, "request_timeout", "the request did not arrive in time"
	}
	writeFastError(ctx, status, code, msg)
}

func writeFastError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	b, _ := json.Marshal(apierror.New(code, msg))
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
	ctx.SetConnectionClose()
}

// fastReq is one request's net/http view, pooled.
type fastReq struct {
	req http.Request
	url url.URL
	w   fastWriter
	// copyHeader's scratch: the values back to back, and where each is
	vals  []byte
	spans []headerSpan
}

type headerSpan struct {
	key        string
	start, end int
}

// copyHeader fills f.req.Header from fasthttp's parsed header (names as
// fasthttp normalized them, which is net/http's canonical form): the usual
// names are constants, and all the values are cut from one string, so that
// a request's header costs two allocations, not two per line. Host and
// Transfer-Encoding stay out, as net/http leaves them out of Header.
func (f *fastReq) copyHeader(h *fasthttp.RequestHeader) {
	vals, spans := f.vals[:0], f.spans[:0]
	for k, v := range h.All() {
		key, ok := commonHeaderKeys[string(k)]
		if !ok {
			if string(k) == "Host" || string(k) == "Transfer-Encoding" {
				continue
			}
			key = string(k)
		}
		spans = append(spans, headerSpan{key, len(vals), len(vals) + len(v)})
		vals = append(vals, v...)
	}
	f.vals, f.spans = vals, spans
	if len(spans) == 0 {
		return
	}
	all := string(vals)
	strs := make([]string, len(spans))
	hdr := f.req.Header
	for i, sp := range spans {
		strs[i] = all[sp.start:sp.end]
		if old, ok := hdr[sp.key]; ok {
			hdr[sp.key] = append(old, strs[i])
		} else {
			hdr[sp.key] = strs[i : i+1 : i+1] // (an append copies it)
		}
	}
}

// commonHeaderKeys are the header names most requests carry, by their
// canonical form, so that copyHeader need not allocate them.
var commonHeaderKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Authorization", "Connection", "Content-Length",
		"Content-Type", "User-Agent", "X-Request-Id", "X-Forwarded-For", "X-Real-Ip", "Accept-Language", "Cookie"} {
		m[k] = k
	}
	return m
}()

var fastReqs = sync.Pool{New: func() any {
	f := &fastReq{}
	f.req.Header = make(http.Header, 8)
	f.w.h = make(http.Header, 8)
	return f
}}

// serveFast runs h on one request fasthttp parsed, in the connection's
// goroutine.
func serveFast(ctx *fasthttp.RequestCtx, h http.Handler) {
	f := fastReqs.Get().(*fastReq)
	defer func() {
		clear(f.req.Header)
		clear(f.w.h)
		hdr, wh, vals, spans := f.req.Header, f.w.h, f.vals, f.spans
		if cap(vals) > 16<<10 || cap(spans) > 256 { // (an unusually large head's: not kept)
			vals, spans = nil, nil
		}
		*f = fastReq{}
		f.req.Header, f.w.h, f.vals, f.spans = hdr, wh, vals[:0], spans[:0]
		fastReqs.Put(f)
	}()
	r := &f.req
	// the path as the client sent it, without the query (as net/http's
	// URL.Path: unescaped); a path that does not parse is refused
	uri := ctx.Request.Header.RequestURI()
	if len(uri) == 0 || uri[0] != '/' {
		writeFastError(ctx, http.StatusBadRequest, "invalid_request", "malformed request target")
		return
	}
	raw, query, _ := bytes.Cut(uri, []byte("?"))
	if bytes.IndexByte(raw, '%') >= 0 {
		p, err := url.PathUnescape(string(raw))
		if err != nil {
			writeFastError(ctx, http.StatusBadRequest, "invalid_request", "malformed request target")
			return
		}
		f.url.Path, f.url.RawPath = p, string(raw)
	} else {
		f.url.Path = string(raw)
	}
	if len(query) > 0 {
		f.url.RawQuery = string(query)
	}
	r.URL = &f.url
	r.Method = string(ctx.Method())
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	if !ctx.Request.Header.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	r.RequestURI = string(uri)
	r.Host = string(ctx.Host())
	if rc, ok := ctx.Conn().(*remoteConn); ok {
		r.RemoteAddr = rc.remote
	} else {
		r.RemoteAddr = ctx.RemoteAddr().String()
	}
	f.copyHeader(&ctx.Request.Header)
	r.ContentLength = int64(ctx.Request.Header.ContentLength())
	switch {
	case r.ContentLength == -1: // chunked
		r.TransferEncoding = []string{"chunked"}
	case r.ContentLength < 0: // none (-2: identity to the end, not for requests)
		r.ContentLength = 0
	}
	if s := ctx.RequestBodyStream(); s != nil {
		r.Body = io.NopCloser(s)
	} else {
		r.Body = http.NoBody
	}
	f.w.ctx = ctx
	c := &fastCtx{Context: ctx, conn: ctx.Conn(), since: ctx.Time()}
	goneWatch.add(c)
	defer c.stop() // (a handler's panic too must take it out of the list)
	serveAbortable(h, &f.w, r.WithContext(c))
	f.w.finish()
}

// serveAbortable runs h as net/http's server does for a handler that
// panics with http.ErrAbortHandler: the answer is cut short (an unfinished
// stream stays unfinished) and the connection closed.
func serveAbortable(h http.Handler, w *fastWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler { //nolint:errorlint // (net/http compares it so too)
				panic(v)
			}
			w.aborted = true
			if !w.streaming {
				w.ctx.Response.Reset()
				w.wroteHeader, w.streaming = true, true // nothing more is written
			}
		}
	}()
	h.ServeHTTP(w, r)
}

// clientGoneCheck is how often the fast front end looks whether the client
// of a request in progress has gone (net/http's server knows at once from
// its background read, which the fast one does not do): a request whose
// client left is cancelled within about twice this long, its upstream call
// with it (499).
const clientGoneCheck = 50 * time.Millisecond

// fastCtx is a request's context on the fast front end: cancelled when the
// client goes away, as net/http's request contexts are. goneWatch looks at
// it once it is clientGoneCheck old, so the usual request costs no timer.
type fastCtx struct {
	context.Context // the fasthttp request (values)
	conn            net.Conn
	since           time.Time // the request's start
	prev, next      *fastCtx  // in goneWatch's list, while in progress
	mu              sync.Mutex
	done            chan struct{}
	err             error
	stopped         bool
	after           []*func() // AfterFunc's, until the context ends
}

// goneWatch holds the fast front end's requests in progress, oldest first,
// and every clientGoneCheck looks whether the clients of those at least
// that old have gone (fastCtx.check). Its goroutine runs only while some
// request is in progress. One list for the process: adding and removing a
// request is a lock and two pointers, where a timer per request cost a
// timer heap's insertion and removal and an allocation (BENCHMARKS.md).
var goneWatch watchList

type watchList struct {
	mu         sync.Mutex
	head, tail *fastCtx
	running    bool
	due        []*fastCtx // the loop's, reused
}

func (w *watchList) add(c *fastCtx) {
	w.mu.Lock()
	c.prev = w.tail
	if w.tail != nil {
		w.tail.next = c
	} else {
		w.head = c
	}
	w.tail = c
	if !w.running {
		w.running = true
		go w.loop()
	}
	w.mu.Unlock()
}

func (w *watchList) remove(c *fastCtx) {
	w.mu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else if w.head == c {
		w.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if w.tail == c {
		w.tail = c.prev
	}
	c.prev, c.next = nil, nil
	w.mu.Unlock()
}

// loop checks the requests at least clientGoneCheck old, every
// clientGoneCheck, and ends when none is in progress.
func (w *watchList) loop() {
	for {
		time.Sleep(clientGoneCheck)
		w.mu.Lock()
		if w.head == nil {
			w.running = false
			w.mu.Unlock()
			return
		}
		old := time.Now().Add(-clientGoneCheck)
		due := w.due[:0]
		for c := w.head; c != nil && !c.since.After(old); c = c.next {
			due = append(due, c)
		}
		w.mu.Unlock()
		for i, c := range due {
			c.check() // (one that ended meanwhile is stopped: nothing to do)
			due[i] = nil
		}
		w.mu.Lock()
		w.due = due[:0]
		w.mu.Unlock()
	}
}

// AfterFunc is what context.AfterFunc calls on a context that has it (the
// upstream call's interruption, on every request): without it, the context
// package would start a goroutine per call to wait on Done.
func (c *fastCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	p := &f
	c.after = append(c.after, p)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, q := range c.after {
			if q == p {
				c.after = append(c.after[:i], c.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *fastCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *fastCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *fastCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// check cancels c when its client has gone.
func (c *fastCtx) check() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.err != nil || !peerGone(c.conn) {
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	for _, f := range c.after {
		go (*f)()
	}
	c.after = nil
}

// stop ends c's watch: its request is done.
func (c *fastCtx) stop() {
	goneWatch.remove(c)
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
}

// fastWriter is an http.ResponseWriter over a fasthttp response: the body
// is buffered and written when the handler returns, in one write with its
// header. A handler that flushes (relayStream) turns it into a stream: the
// head and what was buffered are written to the connection at once, each
// later Write goes out as it comes (a chunk, or raw bytes to an HTTP/1.0
// client), and the connection closes after the answer (fasthttp writes
// nothing more: the request ends hijacked, with no response of its own).
// The server flushes every answer before the next request's handler runs
// (ReduceMemoryUsage), so that nothing of an earlier pipelined answer is
// left behind a stream.
type fastWriter struct {
	ctx         *fasthttp.RequestCtx
	h           http.Header
	status      int
	wroteHeader bool
	streaming   bool
	chunked     bool
	aborted     bool   // the stream is cut short: no last chunk
	chunk       []byte // a chunk's frame, reused
}

func (w *fastWriter) Header() http.Header { return w.h }

func (w *fastWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader, w.status = true, status
	resp := &w.ctx.Response
	// names as the handler wrote them, as net/http's server writes them
	// (they are canonical already when set by Header.Set): no
	// normalization for each one
	resp.Header.DisableNormalizing()
	resp.SetStatusCode(status)
	for k, vs := range w.h {
		switch k {
		case "Content-Type":
			if len(vs) > 0 {
				resp.Header.SetContentType(vs[0])
			}
		case "Connection":
			if len(vs) > 0 && vs[0] == "close" {
				w.ctx.SetConnectionClose()
			}
		case "Content-Length", "Transfer-Encoding", "Date", "Server":
		default:
			for _, v := range vs {
				resp.Header.Add(k, v)
			}
		}
	}
}

func (w *fastWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		if _, ok := w.h["Content-Type"]; !ok && len(b) > 0 {
			w.h["Content-Type"] = []string{http.DetectContentType(b)}
		}
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.streaming {
		if len(b) == 0 {
			return 0, nil
		}
		if err := w.send(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return w.ctx.Write(b)
}

// Flush starts streaming (see fastWriter); then every Write is sent at once.
func (w *fastWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush with its error, as http.ResponseController calls it.
func (w *fastWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.streaming || !bodyAllowed(w.status) {
		return nil
	}
	w.streaming = true
	w.chunked = w.ctx.Request.Header.IsHTTP11()
	resp := &w.ctx.Response
	resp.Header.SetConnectionClose()
	if w.chunked {
		resp.Header.SetContentLength(-1) // Transfer-Encoding: chunked
	} else {
		resp.Header.SetContentLength(-2) // to the connection's end
	}
	head := resp.Header.Header()
	if err := w.write(head); err != nil {
		return err
	}
	if body := resp.Body(); len(body) > 0 {
		return w.send(body)
	}
	return nil
}

// send writes b as the stream's next piece.
func (w *fastWriter) send(b []byte) error {
	if !w.chunked {
		return w.write(b)
	}
	w.chunk = strconv.AppendInt(w.chunk[:0], int64(len(b)), 16)
	w.chunk = append(append(append(w.chunk, "\r\n"...), b...), "\r\n"...)
	return w.write(w.chunk)
}

func (w *fastWriter) write(b []byte) error {
	c := w.ctx.Conn()
	if w.ctx.Response.Header.ConnectionClose() { // (always, while streaming)
		_ = c.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	}
	_, err := c.Write(b)
	return err
}

// SetWriteDeadline is http.ResponseController's: a streamed answer's
// writes have streamWriteTimeout each already.
func (w *fastWriter) SetWriteDeadline(time.Time) error { return nil }

func (w *fastWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.streaming && w.ctx.Response.Header.ConnectionClose() && w.ctx.Request.Header.ContentLength() != 0 {
		w.lingerClose()
		return
	}
	if w.streaming {
		if w.chunked && !w.aborted {
			_ = w.write([]byte("0\r\n\r\n"))
		}
		w.ctx.HijackSetNoResponse(true)
		w.ctx.Hijack(func(net.Conn) {}) // fasthttp then closes the connection
	}
}

// lingerTime is how long a connection closed with its request's body unread
// (413, 408) goes on being read after the answer, as net/http's server does:
// closing it with bytes unread would have the kernel reset it, and the
// client, still sending, could lose the answer to the reset.
const lingerTime = 500 * time.Millisecond

// lingerBytes bounds what a lingering close discards: enough for a client
// that sent a body a few times the 1 MiB cap to finish sending it (a
// connection closed while it still sends is reset, and it may lose the
// answer); lingerTime bounds the time it may take.
const lingerBytes = 8 << 20

// lingerClose writes the answer itself, then half-closes the connection and
// reads what the client still sends (up to lingerBytes, within lingerTime)
// before fasthttp closes it (fasthttp, which would close it at once, writes
// nothing: the request ends hijacked).
func (w *fastWriter) lingerClose() {
	resp := &w.ctx.Response
	body := resp.Body()
	if !bodyAllowed(w.status) || w.ctx.IsHead() {
		body = nil
	} else {
		resp.Header.SetContentLength(len(body))
	}
	raw := w.ctx.Conn()
	_ = w.write(append(resp.Header.Header(), body...))
	w.ctx.HijackSetNoResponse(true)
	w.ctx.Hijack(func(c net.Conn) {
		if hc, ok := raw.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c, lingerBytes)
	})
}

// SetReadDeadline is what http.ResponseController calls: the body deadline.
func (w *fastWriter) SetReadDeadline(t time.Time) error { return w.ctx.SetReadDeadline(t) }

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// frontendName checks Config.Frontend.
func frontendName(s string) (string, error) {
	switch s {
	case FrontendFast:
		return FrontendFast, nil
	case "", FrontendNetHTTP:
		return FrontendNetHTTP, nil
	}
	return "", fmt.Errorf("--frontend=%q: want %s or %s", s, FrontendFast, FrontendNetHTTP)
}
