package apiserver

import (
	"io"
	"net/http"
	"time"
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
	rc := http.NewResponseController(w)
	end := time.Now().Add(total)
	// the answer follows validation, which may take minutes after the last byte
	if rc.SetWriteDeadline(end) != nil {
		return r.Body
	}
	d := &deadlineReader{r: r.Body, rc: rc, idle: idle, end: end}
	if !d.extend() {
		return r.Body
	}
	return d
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
