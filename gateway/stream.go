package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
)

// streamWriteTimeout bounds each write of a streamed answer to the client
// (a client that reads nothing for this long is dropped); the server's own
// write timeout bounds whole answers, which a stream is not.
const streamWriteTimeout = 30 * time.Second

// relayStream copies a streamed upstream answer (isStream: an event stream
// or a body without a length, as generation answers are) to the client as
// it arrives, one flush per read, never buffered whole, on either front end.
// The upstream request ends with it: the client going away cancels the
// request's context, which interrupts the upstream read (roundTrip), and a
// failed write stops the copy; either way the stream is closed, and with it
// the upstream connection (a stream read to its end leaves its connection
// to the replica for the next request, upstream_conn.go). An upstream failing in the middle of an event
// stream ends it with an SSE error event (event: error, the API's error
// body as data); any other streamed body is cut short (the connection is
// aborted without its last chunk) so that the client sees it unfinished.
// Usage was counted once before (serveInfer), as for any answer.
func (g *Gateway) relayStream(w http.ResponseWriter, r *http.Request, st *reqState, res *upstreamResult) {
	defer res.stream.Close()
	h := w.Header()
	if res.contentType != "" {
		h["Content-Type"] = []string{res.contentType}
	}
	h["Cache-Control"] = []string{"no-cache"}
	h["X-Accel-Buffering"] = []string{"no"} // (an nginx in front: do not buffer either)
	w.WriteHeader(res.status)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		st.status = apierror.StatusClientClosed
		return
	}
	buf := getBuf()
	defer putBuf(buf)
	if cap(*buf) < 16<<10 {
		*buf = make([]byte, 16<<10)
	}
	b := (*buf)[:cap(*buf)]
	for {
		n, err := res.stream.Read(b)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, werr := w.Write(b[:n]); werr != nil || rc.Flush() != nil {
				st.status = apierror.StatusClientClosed // the client went away
				return
			}
		}
		if err == nil {
			continue
		}
		if err == io.EOF {
			return
		}
		if r.Context().Err() != nil {
			st.status = apierror.StatusClientClosed
			return
		}
		g.m.upErrors.WithLabelValues(st.model, "stream").Inc()
		g.log.Warn("upstream stream failed", "request_id", requestID(r), "model", st.model, "err", err)
		st.status = http.StatusBadGateway // (for the metrics and the log: the client got its 200)
		if !isEventStream(res.contentType) {
			panic(http.ErrAbortHandler)
		}
		ev, _ := json.Marshal(apierror.New("upstream_error", "the model runtime's stream failed"))
		_, _ = w.Write(append(append([]byte("event: error\ndata: "), ev...), "\n\n"...))
		_ = rc.Flush()
		return
	}
}
