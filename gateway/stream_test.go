package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// sseUpstream is a runtime whose v2 infer answers are event streams: each
// string sent on events goes out as one flushed write; closing events ends
// the answer; fail drops the connection in the middle of it (no last
// chunk). gone is closed when the gateway ends the upstream request.
type sseUpstream struct {
	*httptest.Server
	events chan string
	fail   chan struct{}
	gone   chan struct{}
}

func newSSEUpstream(t *testing.T) *sseUpstream {
	u := &sseUpstream{events: make(chan string), fail: make(chan struct{}), gone: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev, ok := <-u.events:
				if !ok {
					return
				}
				_, _ = io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			case <-u.fail:
				panic(http.ErrAbortHandler) // the connection dropped, the answer unfinished
			case <-r.Context().Done():
				close(u.gone)
				return
			}
		}
	}))
	t.Cleanup(u.Close)
	return u
}

const inferBody = `{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["hi"]}]}`

// streamEnv is a gateway (on the test's front end) whose model "gen" is
// served by one sseUpstream.
func streamEnv(t *testing.T, upstream string) (*env, *sseUpstream, string, int64, int64) {
	e := newEnv(t, false)
	e.upstream = upstream
	acc := e.account("acme", "")
	key, keyID := e.key(acc, "inference")
	modelID := e.model("gen", "text-classification", 0)
	up := newSSEUpstream(t)
	e.static["gen"] = []string{strings.TrimPrefix(up.URL, "http://")}
	e.start(Config{})
	return e, up, key, keyID, modelID
}

func openStream(t *testing.T, e *env, key string) (*http.Response, *bufio.Reader) {
	t.Helper()
	return openSSE(t, e.srv.URL+"/v2/models/gen/infer", "Token "+key, inferBody)
}

// openSSE posts body to url with the Authorization value auth and returns
// the answer, which must be a 200 event stream, and its reader.
func openSSE(t *testing.T, url, auth, body string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return resp, bufio.NewReader(resp.Body)
}

// readEvent reads one event (its lines up to the blank one) within 5 s.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			ev.WriteString(line)
			if err != nil || line == "\n" {
				got <- ev.String()
				return
			}
		}
	}()
	select {
	case ev := <-got:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s: the answer is buffered")
		return ""
	}
}

// The pass-through relays an event stream as it comes: each event reaches
// the client while the upstream is still answering, and the request counts
// once.
func TestStreamRelayed(t *testing.T) { eachUpstream(t, testStreamRelayed) }

func testStreamRelayed(t *testing.T, upstream string) {
	e, up, key, keyID, modelID := streamEnv(t, upstream)
	resp, br := openStream(t, e, key)
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q", cc)
	}
	for i := range 3 {
		ev := fmt.Sprintf("data: {\"token\":%d}\n\n", i)
		sent := time.Now()
		up.events <- ev // (the upstream has not finished: it waits for the next one)
		if got := readEvent(t, br); got != ev {
			t.Fatalf("event %d: %q, want %q", i, got, ev)
		}
		if d := time.Since(sent); d > time.Second {
			t.Errorf("event %d took %s to arrive", i, d)
		}
	}
	close(up.events)
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the last event: %q, %v", rest, err)
	}
	if err := e.gw.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	var requests, texts, errs int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT requests, texts, errors FROM usage WHERE api_key_id=$1 AND model_id=$2`,
		keyID, modelID).Scan(&requests, &texts, &errs); err != nil {
		t.Fatal(err)
	}
	if requests != 1 || texts != 1 || errs != 0 {
		t.Errorf("usage: %d requests, %d texts, %d errors; want 1, 1, 0", requests, texts, errs)
	}
}

// A stream counts in flight until it ends, not only until its head
// arrived: in the model's load (autoscaling) and in its replica's in-flight
// count (balancing), whatever the upstream client.
func TestStreamCountsInFlight(t *testing.T) { eachUpstream(t, testStreamCountsInFlight) }

func testStreamCountsInFlight(t *testing.T, upstream string) {
	e, up, key, _, _ := streamEnv(t, upstream)
	_, br := openStream(t, e, key)
	up.events <- "data: 1\n\n"
	readEvent(t, br)
	ms := e.gw.fleet.get("gen")
	us := ms.pool.Upstreams()
	if len(us) != 1 {
		t.Fatalf("%d upstreams, want 1", len(us))
	}
	if n, m := ms.load.inflight.Load(), us[0].Inflight(); n != 1 || m != 1 {
		t.Fatalf("in the middle of the stream: the model's load %d, the replica's in-flight %d; want 1 and 1", n, m)
	}
	close(up.events)
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the last event: %q, %v", rest, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ms.load.inflight.Load() != 0 || us[0].Inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the stream ended: the model's load %d, the replica's in-flight %d; want 0 and 0", ms.load.inflight.Load(), us[0].Inflight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamStarted is a stream through the gateway whose first event the
// client has read.
func streamStarted(t *testing.T, upstream string) (*sseUpstream, *http.Response, *bufio.Reader) {
	e, up, key, _, _ := streamEnv(t, upstream)
	resp, br := openStream(t, e, key)
	up.events <- "data: 1\n\n"
	readEvent(t, br)
	return up, resp, br
}

// A client that goes away in the middle of a stream ends the upstream
// request: the gateway closes its connection to the runtime.
func TestStreamClientGone(t *testing.T) { eachUpstream(t, testStreamClientGone) }

func testStreamClientGone(t *testing.T, upstream string) {
	up, resp, _ := streamStarted(t, upstream)
	resp.Body.Close() // (unfinished: the Transport closes the connection)
	select {
	case <-up.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request still runs 5 s after the client left")
	}
}

// An upstream that fails in the middle of an event stream: the client's
// stream ends with an SSE error event.
func TestStreamUpstreamFails(t *testing.T) { eachUpstream(t, testStreamUpstreamFails) }

func testStreamUpstreamFails(t *testing.T, upstream string) {
	up, _, br := streamStarted(t, upstream)
	close(up.fail)
	ev := readEvent(t, br)
	if !strings.HasPrefix(ev, "event: error\ndata: {") || !strings.Contains(ev, `"code":"upstream_error"`) {
		t.Fatalf("after the upstream failed: %q, want an error event", ev)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the error event: %q, %v", rest, err)
	}
}

// A stream asked for behind another request on the same connection
// (pipelined): the first answer arrives whole before the stream's head.
func TestStreamPipelined(t *testing.T) {
	e := newEnv(t, false)
	acc := e.account("acme", "")
	key, _ := e.key(acc, "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(t, "text-classification"))
	e.model("gen", "text-classification", 0)
	up := newSSEUpstream(t)
	e.static["gen"] = []string{strings.TrimPrefix(up.URL, "http://")}
	e.start(Config{})
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := func(model string) string {
		return fmt.Sprintf("POST /v2/models/%s/infer HTTP/1.1\r\nHost: gw\r\nAuthorization: Token %s\r\nContent-Length: %d\r\n\r\n%s", model, key, len(inferBody), inferBody)
	}
	if _, err := io.WriteString(c, req("sentiment")+req("gen")); err != nil {
		t.Fatal(err)
	}
	go func() { up.events <- "data: 1\n\n"; close(up.events) }()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	first, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(first.Body)
	if err != nil || first.StatusCode != 200 || !strings.Contains(string(body), `"outputs"`) {
		t.Fatalf("first answer: %d %q %v", first.StatusCode, body, err)
	}
	second, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(second.Body)
	if err != nil || second.StatusCode != 200 || string(body) != "data: 1\n\n" {
		t.Fatalf("second answer: %d %q %v", second.StatusCode, body, err)
	}
}
