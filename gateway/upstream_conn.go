package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// connPool sends requests to one replica over pooled HTTP/1.1 keep-alive
// connections, writing the request and reading the answer in the caller's
// goroutine. net/http's Transport runs a read and a write goroutine per
// connection and hands every request and answer between them and the caller;
// on this platform's small JSON calls those hand-offs, their futex wake-ups
// and allocations cost more CPU than the proxying itself. The replicas are
// our own runtime (net/http servers), so a plain HTTP/1.1 client suffices;
// http.ReadResponse parses the answers.
type connPool struct {
	addr string
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// idleTimeout closes a connection unused this long (well under Swarm's
	// 900 s IPVS idle drop); maxIdle bounds the connections kept.
	idleTimeout time.Duration
	maxIdle     int

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	closed bool
}

type upConn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
}

// errReusedConnDropped: a kept-alive connection was closed by the replica
// before it answered (its idle timeout, a restart); the request never ran.
var errReusedConnDropped = errors.New("kept-alive connection closed by the replica")

// post sends one POST, to be answered by deadline (none when zero); ctx
// ending (the client gone) interrupts it. A request that failed only because
// a reused connection had gone stale is sent again once on a new connection
// (the replica never saw it; inference is idempotent anyway).
//
// The deadline is the connection's, not a context's: context.WithTimeout
// costs a timer, a context and two registrations with the parent on every
// request, a connection deadline one timer update.
func (p *connPool) post(ctx context.Context, deadline time.Time, path, requestID, auth string, body []byte, stream bool) (*upstreamResult, error) {
	c, reused, err := p.get(ctx, deadline)
	if err != nil {
		return nil, err
	}
	ans, err := p.roundTrip(ctx, deadline, c, path, requestID, auth, body, stream)
	if err != nil && reused && errors.Is(err, errReusedConnDropped) && ctx.Err() == nil {
		if c, err = p.dialConn(ctx, deadline); err != nil {
			return nil, err
		}
		ans, err = p.roundTrip(ctx, deadline, c, path, requestID, auth, body, stream)
	}
	return ans, err
}

func (p *connPool) get(ctx context.Context, deadline time.Time) (c *upConn, reused bool, err error) {
	now := time.Now()
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c = p.idle[n-1]
		p.idle = p.idle[:n-1]
		if now.Sub(c.lastUsed) < p.idleTimeout {
			p.mu.Unlock()
			return c, true, nil
		}
		c.c.Close()
	}
	p.mu.Unlock()
	c, err = p.dialConn(ctx, deadline)
	return c, false, err
}

func (p *connPool) dialConn(ctx context.Context, deadline time.Time) (*upConn, error) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	nc, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, context.DeadlineExceeded
		}
		return nil, err
	}
	return &upConn{c: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 8<<10)}, nil
}

func (p *connPool) put(c *upConn) {
	c.lastUsed = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// close drops the idle connections; those in use are closed when returned.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeIdle()
}

// closeIdle drops the idle connections and keeps the pool usable.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes the request on c and reads the answer; c goes back to the
// pool when the exchange left it clean, and is closed otherwise. A streamed
// answer (stream, isStream) keeps the connection, and ctx's hold on it,
// until its Close, which puts it back in the pool when the stream was read
// to its end (a generation's stream: chunked, ended cleanly; no dial for
// the next one) and closes it otherwise (the client gone, a failure, a
// body delimited by the connection's end).
func (p *connPool) roundTrip(ctx context.Context, deadline time.Time, c *upConn, path, requestID, auth string, body []byte, stream bool) (ans *upstreamResult, err error) {
	c.c.SetDeadline(deadline) // (zero: none, which also clears a reused connection's last one)
	idle := streamIdle(deadline)
	// the caller's context ending (the client gone) interrupts blocked I/O;
	// the connection then is closed
	stop := afterFunc(ctx, func() { c.c.SetDeadline(aLongTimeAgo) })
	keep := false
	defer func() {
		if ans != nil && ans.stream != nil {
			// the deadline bounded the wait for the stream's head; its
			// reads are bounded each by idle (idleReads), not all together
			c.c.SetDeadline(time.Time{})
			ir := &idleReads{ReadCloser: ans.stream, idle: idle, ctx: ctx,
				set: func(t time.Time) { c.c.SetReadDeadline(t) }}
			es := &endedStream{ReadCloser: ir}
			ans.stream = &upstreamStream{ReadCloser: es, done: func() {
				if stop() && keep && es.ended && c.br.Buffered() == 0 {
					es.close() // (at its end: nothing left to drain)
					p.put(c)
					return
				}
				c.c.Close()
			}}
			return
		}
		if !stop() || !keep {
			c.c.Close()
			return
		}
		p.put(c)
	}()

	bw := c.bw
	bw.WriteString("POST ")
	bw.WriteString(path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(p.addr)
	bw.WriteString("\r\nContent-Type: application/json\r\nX-Request-ID: ")
	bw.WriteString(requestID)
	if auth != "" {
		bw.WriteString("\r\nAuthorization: ")
		bw.WriteString(auth)
	}
	bw.WriteString("\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	bw.WriteString("\r\n\r\n")
	bw.Write(body)
	if err := bw.Flush(); err != nil {
		return nil, p.ioErr(ctx, deadline, err, true)
	}
	if _, err := c.br.Peek(1); err != nil { // nothing of an answer arrived
		return nil, p.ioErr(ctx, deadline, err, true)
	}
	ans, keep, err = readAnswer(c.br, stream)
	if err != nil {
		return nil, p.ioErr(ctx, deadline, err, false)
	}
	keep = keep && (ans.stream != nil || c.br.Buffered() == 0) // (a stream's body is in br)
	return ans, nil
}

// afterFunc is context.AfterFunc, called straight on a context that has an
// AfterFunc of its own (the fast front end's request context, fastCtx):
// context.AfterFunc would first wrap it in a cancellable context of its own
// (two allocations and a registration more on every upstream call).
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// endedStream is a streamed answer's body that notes it was read to its
// end (io.EOF: a chunked body's last chunk and trailer were read) and is
// closed once.
type endedStream struct {
	io.ReadCloser
	ended, closed bool
}

func (s *endedStream) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if err == io.EOF {
		s.ended = true
	}
	return n, err
}

func (s *endedStream) close() {
	if !s.closed {
		s.closed = true
		_ = s.ReadCloser.Close()
	}
}

func (s *endedStream) Close() error {
	s.close()
	return nil
}

// readAnswer reads one answer from br. The usual one, a status line and a
// few headers with a Content-Length all in the read buffer already, is
// parsed in place (parseHead); anything else goes through
// http.ReadResponse. keep says the connection may carry another request.
// With stream, a streamed answer (isStream) comes with its body unread, as
// ans.stream.
func readAnswer(br *bufio.Reader, stream bool) (ans *upstreamResult, keep bool, err error) {
	if buf, _ := br.Peek(br.Buffered()); len(buf) > 0 {
		if h, ok := parseHead(buf); ok && h.length <= maxUpstreamBody && !(stream && isStream(h.status, h.contentType, h.length)) {
			_, _ = br.Discard(h.size)
			data := make([]byte, h.length)
			if _, err := io.ReadFull(br, data); err != nil {
				return nil, false, err
			}
			return &upstreamResult{status: h.status, contentType: h.contentType, body: data}, !h.close, nil
		}
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, false, err
	}
	if stream && isStream(resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength) {
		// keep: the body has its own end (chunked, or a length), so the
		// connection may carry another request once it is read to there
		keep := !resp.Close && (resp.ContentLength >= 0 || slices.Contains(resp.TransferEncoding, "chunked"))
		return &upstreamResult{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), stream: resp.Body}, keep, nil
	}
	defer resp.Body.Close()
	ans, err = readResult(resp)
	if err != nil {
		return nil, false, err
	}
	return ans, !resp.Close && resp.ContentLength >= 0, nil
}

// answerHead is what parseHead read of an answer's head.
type answerHead struct {
	size        int // bytes of the status line and headers, the blank line included
	status      int
	contentType string
	length      int64
	close       bool // Connection: close
}

// parseHead parses an HTTP/1.1 answer head held whole in buf, when it is of
// the plain kind: "HTTP/1.1 ddd ...", one Content-Length, no
// Transfer-Encoding, no folded or malformed lines, a status that has a body
// (not 1xx, 204 or 304). ok=false leaves everything else, and every doubt,
// to http.ReadResponse; FuzzParseHead checks that where ok, both agree.
func parseHead(buf []byte) (h answerHead, ok bool) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return h, false
	}
	h.size = end + 4
	head := buf[:end+2] // every line ends with CRLF
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if bytes.IndexFunc(line, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		return h, false // a bare CR or LF: lines are not what they seem
	}
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return h, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return h, false
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 200 || h.status == 204 || h.status == 304 {
		return h, false
	}
	h.length = -1
	typed := false // a Content-Type line was read
	// header names, values and the Connection token are judged by the same
	// httpguts functions net/http uses
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || !httpguts.ValidHeaderFieldName(string(name)) {
			return h, false // a folded line, a malformed one
		}
		value = bytes.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(string(value)) {
			return h, false
		}
		switch { // (name is an ASCII token: EqualFold's Unicode folding cannot apply)
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseUint(string(value), 10, 63)
			if h.length >= 0 || err != nil {
				return h, false
			}
			h.length = int64(n)
		case bytes.EqualFold(name, []byte("Content-Type")):
			if !typed { // the first one counts, as in Header.Get, even empty
				typed, h.contentType = true, string(value)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			h.close = h.close || httpguts.HeaderValuesContainsToken([]string{string(value)}, "close")
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return h, false
		}
	}
	return h, h.length >= 0
}

// ioErr names an I/O failure: the context's error when it caused it, and
// errReusedConnDropped when nothing of an answer arrived.
func (p *connPool) ioErr(ctx context.Context, deadline time.Time, err error, nothingRead bool) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && !deadline.IsZero() && !time.Now().Before(deadline) {
		return context.DeadlineExceeded
	}
	if nothingRead && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)) {
		return fmt.Errorf("%w: %v", errReusedConnDropped, err)
	}
	return fmt.Errorf("replica %s: %w", p.addr, err)
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// readResult reads an answer's body, at most maxUpstreamBody bytes: into
// one buffer of the announced length when there is one.
func readResult(resp *http.Response) (*upstreamResult, error) {
	var data []byte
	var err error
	if n := resp.ContentLength; n >= 0 && n <= maxUpstreamBody {
		data = make([]byte, n)
		_, err = io.ReadFull(resp.Body, data)
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	}
	if err != nil {
		return nil, err
	}
	return &upstreamResult{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: data}, nil
}
