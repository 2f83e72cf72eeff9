package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/benchload"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/models"
)

// costPredictor is a stand-in model whose cost grows with its batch: base
// plus perText per text, one batch at a time (the runtime's batcher calls
// it serially), as a CPU replica's inference does.
type costPredictor struct{ base, perText time.Duration }

func (p costPredictor) Predict(_ context.Context, texts []string, _ models.Params) ([]any, error) {
	time.Sleep(p.base + time.Duration(len(texts))*p.perText)
	outs := make([]any, len(texts))
	for i := range texts {
		outs[i] = []runtimeapi.Label{{Label: "POSITIVE", Score: 0.9}, {Label: "NEGATIVE", Score: 0.1}}
	}
	return outs, nil
}

// costRuntime serves a costPredictor through the real runtime (server and
// batcher) for model on e.
func costRuntime(b *testing.B, e *env, model string, p costPredictor) {
	m := models.NewMetrics(nil)
	bt := models.NewBatcher(p, models.DefaultBatchConfig(), m)
	ctx, cancel := context.WithCancel(context.Background())
	go bt.Run(ctx)
	srv := models.NewServer(model, runtimeapi.TextClassification, "sha256:test", bt, models.DefaultLimits(), m, slog.New(slog.DiscardHandler))
	srv.SetReady(true)
	srv.SetCallCredential(artifactcred.Call(testCallKey, model))
	hs := httptest.NewServer(srv)
	b.Cleanup(func() { hs.Close(); cancel() })
	e.static[model] = append(e.static[model], strings.TrimPrefix(hs.URL, "http://"))
}

// BenchmarkJobInterference measures interactive latency on two replicas
// alone, then while a 20,000-text job runs on the same replicas: with the
// jobs' priority in the gateway (the defaults: 2 batches in flight,
// paused while 4 interactive requests are) or without it (16 batches,
// never paused), each with the runtime's background lane (the job's
// batches as /predict?priority=background) or without it (as interactive
// requests, the runtime before the lane). Interactive load: 4 clients, one
// text per request, 2 ms between requests.
// Run: go test -run '^$' -bench JobInterference -benchtime 1x ./gateway/
func BenchmarkJobInterference(b *testing.B) {
	unlimited := JobsConfig{JobWorkers: 16, JobPauseInflight: 1 << 20}
	for _, c := range []struct {
		name   string
		cfg    JobsConfig
		noLane bool
	}{
		{"priority+lane", JobsConfig{}, false},
		{"priority", JobsConfig{}, true},
		{"lane", unlimited, false},
		{"none", unlimited, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b, false)
			key, _ := e.key(e.account("acme", ""), "inference")
			id := e.id(`INSERT INTO models(name, task) VALUES ('sentiment', 'text-classification') RETURNING id`)
			e.exec(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, 2)`, id)
			for i := 0; i < 2; i++ {
				costRuntime(b, e, "sentiment", costPredictor{base: time.Millisecond, perText: 100 * time.Microsecond})
			}
			c.cfg.JobWebhookPrivate = true
			e.start(Config{JobsConfig: c.cfg})
			e.gw.jobs.foreground.Store(c.noLane)
			const phase = 4 * time.Second
			alone := interactiveLoad(b, e, key, phase)
			a := e.post(key, customerapi.PathJobs, `{"model":"sentiment","task":"sentiment","texts":`+jobTexts(20_000)+`}`)
			if a.status != http.StatusAccepted {
				b.Fatalf("job: %d %s", a.status, a.raw)
			}
			jobID := a.body["id"].(string)
			time.Sleep(500 * time.Millisecond)
			d0 := e.call(http.MethodGet, key, customerapi.JobPath(jobID), "").body["done"].(float64)
			withJob := interactiveLoad(b, e, key, phase)
			d1 := e.call(http.MethodGet, key, customerapi.JobPath(jobID), "").body["done"].(float64)
			if d1 >= 20_000 {
				b.Log("the job finished within the measure: its tail is not measured")
			}
			p99a, p99j := pct(alone, 0.99), pct(withJob, 0.99)
			b.ReportMetric(ms(pct(alone, 0.5)), "p50-alone-ms")
			b.ReportMetric(ms(p99a), "p99-alone-ms")
			b.ReportMetric(ms(pct(withJob, 0.5)), "p50-job-ms")
			b.ReportMetric(ms(p99j), "p99-job-ms")
			b.ReportMetric(float64(p99j)/float64(p99a), "p99-ratio")
			b.ReportMetric((d1-d0)/phase.Seconds(), "job-texts/s")
			b.Logf("%s: interactive p99 %s alone, %s with the job (×%.2f, %d and %d requests); job %.0f texts/s",
				c.name, p99a, p99j, float64(p99j)/float64(p99a), len(alone), len(withJob), (d1-d0)/phase.Seconds())
			e.post(key, customerapi.JobCancelPath(jobID), "")
		})
	}
}

// interactiveLoad runs 4 clients of one text a request, 2 ms apart, for d
// and returns their latencies.
func interactiveLoad(b *testing.B, e *env, key string, d time.Duration) []time.Duration {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	lat, err := benchload.Run(client, 4, 2*time.Millisecond, d, func(_, i int) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/sentiment/sentiment", strings.NewReader(fmt.Sprintf(`{"text":"interactive %d"}`, i)))
		req.Header.Set("Authorization", "Token "+key)
		return req
	})
	if err != nil {
		b.Error(err)
	}
	return lat
}

var pct = benchload.Quantile

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
