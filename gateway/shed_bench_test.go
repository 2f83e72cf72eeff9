package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkServeTaskInProcess is the task route's cost in the handler
// (a cached key, a real runtime on loopback), allocations included: the
// shedding guards must add none.
//
//	go test -run '^$' -bench ServeTaskInProcess -benchmem ./gateway/
func BenchmarkServeTaskInProcess(b *testing.B) {
	e := newEnv(b, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(b, "text-classification"))
	g := e.start(Config{})
	body := `{"text":"a fine day"}`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest("POST", "/v1/sentiment/sentiment", strings.NewReader(body))
		r.Header["Authorization"] = []string{"Token " + key}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}

// BenchmarkServeTaskLoopback is the same through the platform's HTTP server
// on loopback (a real connection, whose read deadline the body deadline
// sets), client included.
func BenchmarkServeTaskLoopback(b *testing.B) {
	e := newEnv(b, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	e.model("sentiment", "text-classification", 0, newRuntime(b, "text-classification"))
	e.start(Config{})
	url := e.srv.URL + "/v1/sentiment/sentiment"
	body := `{"text":"a fine day"}`
	client := http.DefaultClient
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest("POST", url, strings.NewReader(body))
		r.RequestURI = ""
		r.Header["Authorization"] = []string{"Token " + key}
		resp, err := client.Do(r)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%d", resp.StatusCode)
		}
	}
}
