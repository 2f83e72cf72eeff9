package models

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/benchload"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// sleeper costs what callLog's model does (1 ms a call + 0.1 ms a text),
// without recording.
type sleeper struct{}

func (sleeper) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	time.Sleep(time.Millisecond + time.Duration(len(texts))*100*time.Microsecond)
	out := make([]any, len(texts))
	for i := range out {
		out[i] = []runtimeapi.Label{{Label: "POSITIVE", Score: 0.9}, {Label: "NEGATIVE", Score: 0.1}}
	}
	return out, nil
}

// BenchmarkBackgroundInterference measures, at one replica alone (no
// gateway, no job queue: what "the same replicas" share), the interactive
// p99 alone and then beside a job's load: 2 callers each sending
// 32-text requests back to back, as the gateway's job worker does (2
// batches in flight by default), either on the background lane
// (/predict?priority=background) or as interactive requests (the runtime
// before the lane). Interactive: 4 clients, one text a request, 2 ms
// apart; 4 s a phase.
// Run: go test -run '^$' -bench BackgroundInterference -benchtime 1x ./models/
func BenchmarkBackgroundInterference(b *testing.B) {
	for _, c := range []struct{ name, path string }{
		{"lane", runtimeapi.PathPredictBackground},
		{"no-lane", runtimeapi.PathPredict},
	} {
		b.Run(c.name, func(b *testing.B) {
			hs := newTestServer(b, sleeper{}, TextClassification, DefaultBatchConfig(), DefaultLimits())
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			const phase = 4 * time.Second
			alone := interactive(b, client, hs.URL, phase)
			stop := make(chan struct{})
			var jobTexts atomic.Int64
			var wg sync.WaitGroup
			texts := make([]string, 32)
			for i := range texts {
				texts[i] = fmt.Sprintf("job text %d", i)
			}
			body := `{"texts":["` + strings.Join(texts, `","`) + `"]}`
			for range 2 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := client.Post(hs.URL+c.path, "application/json", strings.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body) // (read to the end: the connection is reused)
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							jobTexts.Add(32)
						}
					}
				})
			}
			time.Sleep(200 * time.Millisecond)
			j0 := jobTexts.Load()
			withJob := interactive(b, client, hs.URL, phase)
			rate := float64(jobTexts.Load()-j0) / phase.Seconds()
			close(stop)
			wg.Wait()
			p99a, p99j := benchload.Quantile(alone, 0.99), benchload.Quantile(withJob, 0.99)
			b.ReportMetric(float64(p99a.Microseconds())/1000, "p99-alone-ms")
			b.ReportMetric(float64(p99j.Microseconds())/1000, "p99-job-ms")
			b.ReportMetric(float64(p99j)/float64(p99a), "p99-ratio")
			b.ReportMetric(rate, "job-texts/s")
			b.Logf("%s: interactive p50 %s → %s, p99 %s → %s (×%.2f) beside the job; job %.0f texts/s",
				c.name, benchload.Quantile(alone, 0.5).Round(10*time.Microsecond), benchload.Quantile(withJob, 0.5).Round(10*time.Microsecond),
				p99a.Round(10*time.Microsecond), p99j.Round(10*time.Microsecond), float64(p99j)/float64(p99a), rate)
		})
	}
}

// interactive runs 4 clients of one text a request, 2 ms apart, for d and
// returns their latencies.
func interactive(b *testing.B, client *http.Client, url string, d time.Duration) []time.Duration {
	lat, err := benchload.Run(client, 4, 2*time.Millisecond, d, func(c, i int) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, url+runtimeapi.PathPredict, strings.NewReader(fmt.Sprintf(`{"texts":["interactive %d %d"]}`, c, i)))
		req.Header.Set("Content-Type", "application/json")
		return req
	})
	if err != nil {
		b.Error(err)
	}
	return lat
}
