package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/httpserver"
)

// TestRequestSmuggling: requests whose framing two HTTP parsers could read
// differently (both lengths, two lengths, folded or bare-LF header lines,
// oversized heads) are refused whole, on each front end: no model is
// called, and a request hidden in the body is never answered on its own.
func TestRequestSmuggling(t *testing.T) {
	e := newEnv(t, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	rt := newRuntime(t, "text-classification")
	e.model("public", "text-classification", 0, rt)
	g := e.start(Config{})
	addr := listenGateway(t, g, httpserver.Options{})
	body := `{"text":"x"}`
	hidden := "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
	head := "POST /v1/public/sentiment HTTP/1.1\r\nHost: x\r\nAuthorization: Token " + key + "\r\n"
	for _, c := range []struct {
		name, req string
		want      int   // the first answer's status
		hits      int64 // model calls
		// answers on the connection: 1 (refused and closed) unless the
		// framing is unambiguous and the hidden request a pipelined one
		answers int
		// net/http's server, where it differs: it reads a request with
		// both lengths as chunked (RFC 9112 6.1 allows it) and so answers
		// the hidden request after it; the fast front end refuses it
		netWant, netAnswers int
	}{
		{name: "content-length and chunked", req: head + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden, want: 400, answers: 1, netAnswers: 2},
		{name: "two content-lengths", req: head + "Content-Length: 12\r\nContent-Length: 0\r\n\r\n" + body + hidden, want: 400, answers: 1},
		{name: "transfer-encoding not chunked", req: head + "Transfer-Encoding: gzip, identity\r\n\r\n" + body + hidden, want: 400, answers: 1, netWant: 501},
		{name: "signed content-length", req: head + "Content-Length: +12\r\n\r\n" + body + hidden, want: 400, answers: 1},
		{name: "space before colon", req: head + "Content-Length : 12\r\n\r\n" + body + hidden, want: 400, answers: 1},
		{name: "oversized head", req: head + "X-Big: " + strings.Repeat("a", 80<<10) + "\r\nContent-Length: 12\r\n\r\n" + body, want: 431, answers: 1},
		// obs-fold is replaced by a space (RFC 9112 5.2 allows it), by both
		// servers alike: the framing is the same for both readings
		{name: "folded content-length", req: head + "X-A: b\r\nContent-Length:\r\n 12\r\n\r\n" + body + hidden, want: 200, hits: 1, answers: 2},
		{name: "bare LF line ends", req: strings.ReplaceAll(head+"Content-Length: 12\r\n\r\n", "\r\n", "\n") + body + hidden, want: 200, hits: 1, answers: 2},
	} {
		if testFrontend == FrontendNetHTTP {
			if c.netWant != 0 {
				c.want = c.netWant
			}
			if c.netAnswers != 0 {
				c.answers = c.netAnswers
			}
		}
		t.Run(c.name, func(t *testing.T) {
			before := rt.hits.Load()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() { _, _ = io.WriteString(conn, c.req) }()
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			br := bufio.NewReader(conn)
			var statuses []int
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses = append(statuses, resp.StatusCode)
			}
			if len(statuses) != c.answers || statuses[0] != c.want {
				t.Errorf("answers %v, want %d answers, the first %d", statuses, c.answers, c.want)
			}
			if n := rt.hits.Load() - before; n != c.hits {
				t.Errorf("%d requests reached the model, want %d", n, c.hits)
			}
		})
	}
}
