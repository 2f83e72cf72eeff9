package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"
)

// upstreamClient sends the gateway's requests to the replicas. Two
// implementations, chosen by Config.Upstream: fastClient, the gateway's own
// HTTP/1.1 client (upstream_conn.go: less CPU per request, see
// BENCHMARKS.md), and netHTTPClient, net/http's Transport, the reference
// that the same tests run against.
type upstreamClient interface {
	// post sends body to the replica u, to be answered by deadline (none
	// when zero), with auth as its Authorization header (the model's call
	// credential; none when ""); ctx ending (the client gone) interrupts
	// it. An error means no answer came: a connection failure, or ctx's or
	// the deadline's end. With stream, a 200 answer that is an event stream
	// (or chunked without a length) comes as upstreamResult.stream, to be
	// relayed as it arrives (relayStream) and closed by the caller.
	post(ctx context.Context, deadline time.Time, u *Upstream, path, requestID, auth string, body []byte, stream bool) (*upstreamResult, error)
	// closeIdle drops the kept-alive connections not in use.
	closeIdle()
}

// Upstream clients by their Config.Upstream name.
const (
	upstreamFast    = "fast"
	upstreamNetHTTP = "nethttp"
)

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func newUpstreamClient(kind string, dial dialFunc, idleTimeout time.Duration) upstreamClient {
	if kind == upstreamNetHTTP {
		return &netHTTPClient{c: &http.Client{Transport: &http.Transport{
			DialContext:         dial,
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     idleTimeout,
			DisableCompression:  true,
		}}}
	}
	return &fastClient{dial: dial, idleTimeout: idleTimeout}
}

// fastClient keeps a connPool per replica, in its Upstream (which closes it
// when the replica leaves the pool).
type fastClient struct {
	dial        dialFunc
	idleTimeout time.Duration
}

func (f *fastClient) post(ctx context.Context, deadline time.Time, u *Upstream, path, requestID, auth string, body []byte, stream bool) (*upstreamResult, error) {
	return f.conns(u).post(ctx, deadline, path, requestID, auth, body, stream)
}

// conns is u's connection pool, made on first use.
func (f *fastClient) conns(u *Upstream) *connPool {
	if p := u.conns.Load(); p != nil {
		return p
	}
	p := &connPool{addr: u.Addr, dial: f.dial, idleTimeout: f.idleTimeout, maxIdle: 512}
	if !u.conns.CompareAndSwap(nil, p) {
		return u.conns.Load()
	}
	return p
}

// closeIdle is the fleet's to do (fleet.closeIdle): the pools live in the
// replicas' Upstreams.
func (f *fastClient) closeIdle() {}

// netHTTPClient sends requests through net/http's Transport.
type netHTTPClient struct {
	c *http.Client
}

func (n *netHTTPClient) post(ctx context.Context, deadline time.Time, u *Upstream, path, requestID, auth string, body []byte, stream bool) (res *upstreamResult, err error) {
	cancel := context.CancelFunc(func() {})
	var timer *time.Timer // a stream's: the deadline, then its idle bound
	switch {
	case deadline.IsZero():
	case stream:
		// the deadline bounds the wait for the answer's head; a stream's
		// reads are then bounded each by its idle time (idleReads)
		ctx, cancel = context.WithCancel(ctx)
		timer = time.AfterFunc(time.Until(deadline), cancel)
	default:
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	idle := streamIdle(deadline)
	defer func() {
		if res == nil || res.stream == nil { // (a stream's Close cancels)
			cancel()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+u.Addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("replica %s: %w", u.Addr, err)
	}
	req.Header["Content-Type"] = jsonContentType
	req.Header["X-Request-Id"] = []string{requestID}
	if auth != "" {
		req.Header["Authorization"] = []string{auth}
	}
	// inference is idempotent: the Transport may send the request again
	// when a kept-alive connection turns out closed (a nil value is not sent)
	req.Header["Idempotency-Key"] = nil
	resp, err := n.c.Do(req)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("replica %s: %w", u.Addr, err)
	}
	if stream && isStream(resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength) {
		body := io.ReadCloser(resp.Body)
		if timer != nil {
			body = &idleReads{ReadCloser: resp.Body, idle: idle, ctx: ctx,
				set: func(t time.Time) { timer.Reset(time.Until(t)) }}
		}
		return &upstreamResult{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"),
			stream: &upstreamStream{ReadCloser: body, done: func() {
				if timer != nil {
					timer.Stop()
				}
				cancel()
			}}}, nil
	}
	defer resp.Body.Close()
	ans, err := readResult(resp)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("replica %s: %w", u.Addr, err)
	}
	return ans, nil
}

func (n *netHTTPClient) closeIdle() { n.c.CloseIdleConnections() }

// isStream: an answer the pass-through relays as it arrives (relayStream)
// instead of reading it whole: a 200 that is an event stream
// (text/event-stream) or has no length (chunked, or up to the connection's
// end), as generation answers are.
func isStream(status int, contentType string, length int64) bool {
	return status == http.StatusOK && (length < 0 || isEventStream(contentType))
}

func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

// streamIdle is how long a streamed answer may go without a byte: the
// time its request had until its deadline when it was sent (the model's
// timeout, less what a retry already spent; none without a deadline). A
// generation's stream lasts as long as its tokens take, each read bounded
// by this, instead of being cut at the model's timeout as a whole answer
// is.
func streamIdle(deadline time.Time) time.Duration {
	if deadline.IsZero() {
		return 0
	}
	return max(time.Until(deadline), time.Second)
}

// idleReads bounds each Read of a stream's body by idle: set moves the
// read's deadline (the connection's, or a timer cancelling the request's
// context) before each one; a context already ended fails the read at
// once, so that a deadline set after the client left cannot hold it.
type idleReads struct {
	io.ReadCloser
	idle time.Duration // 0: unbounded
	ctx  context.Context
	set  func(time.Time)
}

func (r *idleReads) Read(p []byte) (int, error) {
	if r.idle > 0 {
		r.set(time.Now().Add(r.idle))
	}
	if err := r.ctx.Err(); err != nil {
		r.set(aLongTimeAgo)
		return 0, err
	}
	return r.ReadCloser.Read(p)
}

// upstreamStream is a streamed answer's body; Close ends the upstream
// request (its connection is closed, never reused).
type upstreamStream struct {
	io.ReadCloser
	done func()
}

func (s *upstreamStream) Close() error {
	s.done() // first: closing an unfinished body read by http.ReadResponse drains it
	return s.ReadCloser.Close()
}
