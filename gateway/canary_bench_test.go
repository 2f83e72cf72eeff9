package gateway

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

// BenchmarkShadowLatency compares the customer's latency of a model with a
// shadow version (every request copied to it) with that of the same model
// without one, requests to the two interleaved one by one on one
// connection each, so that both see the same machine at the same moment:
//
//	go test -run '^$' -bench ShadowLatency -benchtime 20000x ./gateway/
//
// It reports each one's p50 and p99 in µs and the p99 difference. Both
// models' stable replicas are the real runtime on a stub predictor; the
// shadow is a fake replica that answers at once.
func BenchmarkShadowLatency(b *testing.B) {
	if b.N < 100 {
		return
	}
	e := newEnv(b, true)
	key, _ := e.key(e.account("acme", ""), "inference")
	e.model("plain", "text-classification", 0, newRuntime(b, "text-classification"))
	id := e.model("shadowed", "text-classification", 0, newRuntime(b, "text-classification"))
	shadow := newFakeReplica(b, labelsPositive)
	e.canary("shadowed", id, 2, deployment.ModeShadow, 0, false, shadow.addr())
	e.start(Config{})
	send := func(c *http.Client, model string) time.Duration {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/"+model+"/sentiment", strings.NewReader(`{"text":"a fine day"}`))
		req.Header.Set("Authorization", "Token "+key)
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", model, resp.StatusCode)
		}
		return d
	}
	cp, cs := &http.Client{Transport: &http.Transport{}}, &http.Client{Transport: &http.Transport{}}
	for range 200 { // warm up both
		send(cp, "plain")
		send(cs, "shadowed")
	}
	plain, shadowed := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			plain = append(plain, send(cp, "plain"))
			shadowed = append(shadowed, send(cs, "shadowed"))
		} else {
			shadowed = append(shadowed, send(cs, "shadowed"))
			plain = append(plain, send(cp, "plain"))
		}
	}
	b.StopTimer()
	q := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(p*float64(len(d)-1))].Microseconds())
	}
	p99p, p99s := q(plain, 0.99), q(shadowed, 0.99)
	b.ReportMetric(q(plain, 0.5), "p50-plain-µs")
	b.ReportMetric(p99p, "p99-plain-µs")
	b.ReportMetric(q(shadowed, 0.5), "p50-shadow-µs")
	b.ReportMetric(p99s, "p99-shadow-µs")
	b.ReportMetric(p99s-p99p, "p99-diff-µs")
	b.Logf("shadow copies answered: %d of %d requests", shadow.answered.Load(), b.N+200)
}
