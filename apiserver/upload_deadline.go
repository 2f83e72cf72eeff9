package apiserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/modelmgr"
)

// The server's read timeout bounds whole requests (60 s by default), which a
// multi-GiB archive on an ordinary link needs far longer than. Upload routes
// instead get an idle deadline that moves forward while bytes arrive, under
// an overall cap: a slow but steady upload finishes, a stalled or
// slowloris-style one is cut off after UploadIdle without progress.

// Default upload deadlines.
const (
	DefaultUploadIdle    = time.Minute
	DefaultUploadTimeout = 2 * time.Hour
)

// uploadBody returns r's body with the upload deadlines in force on the
// connection. Where the connection does not allow deadlines (a test
// recorder, HTTP/2 without support), the server's own timeouts stay.
func (s *Server) uploadBody(w http.ResponseWriter, r *http.Request) io.Reader {
	idle, total := s.cfg.UploadIdle, s.cfg.UploadTimeout
	if idle <= 0 {
		idle = DefaultUploadIdle
	}
	if total <= 0 {
		total = DefaultUploadTimeout
	}
	body := &clientBody{r: r.Body}
	rc := http.NewResponseController(w)
	end := time.Now().Add(total)
	// the answer follows validation, which may take minutes after the last byte
	if rc.SetWriteDeadline(end) != nil {
		return body
	}
	d := &deadlineReader{r: body, rc: rc, idle: idle, end: end}
	if !d.extend() {
		return body
	}
	return d
}

// clientBody marks what went wrong reading the client's request body, so a
// truncated or stalled upload is told apart from a database outage: both
// surface as io.ErrUnexpectedEOF or a net.Error, and dbUnavailable would
// answer the client's fault with 503 "the database is unreachable".
type clientBody struct {
	r     io.Reader
	ended bool // the body reached its end (io.EOF)
}

// bodyReadError is a read of the client's body that failed: the connection
// closed before the declared length, a chunk was cut, or the idle deadline
// passed.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "read request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF:
		b.ended = true
	case err != nil:
		err = &bodyReadError{err}
	}
	return n, err
}

// bodyFault reports err as the client's fault when it came from reading
// body (an uploadBody reader): a stalled upload is 408, a body that ended
// early or before the multipart's closing boundary is 400. Otherwise nil.
func bodyFault(body io.Reader, err error) error {
	var be *bodyReadError
	if errors.As(err, &be) {
		var mbe *http.MaxBytesError
		if errors.As(be.err, &mbe) {
			return fmt.Errorf("upload body over %d bytes: %w", mbe.Limit, modelmgr.ErrTooLarge)
		}
		var ne net.Error
		if errors.As(be.err, &ne) && ne.Timeout() {
			return &requestError{status: http.StatusRequestTimeout, code: "request_timeout", message: "the upload stalled: no bytes arrived within the idle time; send it again"}
		}
		return badRequest("the upload body ended early or could not be read; send the whole body again")
	}
	cb, _ := body.(*clientBody)
	if d, ok := body.(*deadlineReader); ok {
		cb, _ = d.r.(*clientBody)
	}
	if cb != nil && cb.ended && errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest("the multipart body ended before its closing boundary; send the whole body again")
	}
	return nil
}

// deadlineReader pushes the connection's read deadline forward on progress.
type deadlineReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
	last time.Time // when the deadline was last moved
}

func (d *deadlineReader) extend() bool {
	now := time.Now()
	d.last = now
	t := now.Add(d.idle)
	if t.After(d.end) {
		t = d.end
	}
	return d.rc.SetReadDeadline(t) == nil
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	// once a second is often enough to move the deadline
	if n > 0 && time.Since(d.last) > time.Second {
		d.extend()
	}
	return n, err
}
