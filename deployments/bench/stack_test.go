package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/gateway"
	"github.com/nlpswarm/nlpswarm/internal/apikey"
	"github.com/nlpswarm/nlpswarm/internal/artifactcred"
	"github.com/nlpswarm/nlpswarm/internal/httpserver"
	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/models"
)

// BenchmarkStackInProcess: gateway → one runtime of the MiniLM-sized
// encoder at concurrency NLPSWARM_BENCH_CONC (16) for NLPSWARM_BENCH_SECONDS
// (10) a run, each engine this binary has, alternated for
// NLPSWARM_BENCH_ROUNDS (2). Needs NLPSWARM_MINILM_DIR and the test
// Postgres (NLPSWARM_TEST_DB_URL). Both engines, in the ORT image:
//
//	CGO_ENABLED=1 go test -c -tags ORT -o bin/bench-ort.test ./deployments/bench
//	docker run --rm --network host -e NLPSWARM_TEST_DB_URL -e NLPSWARM_MINILM_DIR=/t/minilm \
//	  -v $PWD/bin/minilm:/t/minilm:ro -v $PWD/bin/bench-ort.test:/t/bench.test:ro \
//	  --entrypoint /t/bench.test nlpswarm-ort:dev -test.run '^$' -test.bench StackInProcess -test.benchtime 1x
func BenchmarkStackInProcess(b *testing.B) {
	dir := os.Getenv("NLPSWARM_MINILM_DIR")
	if dir == "" {
		b.Skip("NLPSWARM_MINILM_DIR unset: make minilm writes bin/minilm")
	}
	conc, secs, rounds := envInt("NLPSWARM_BENCH_CONC", 16), envInt("NLPSWARM_BENCH_SECONDS", 10), envInt("NLPSWARM_BENCH_ROUNDS", 2)
	backends := []string{models.BackendGo}
	if models.HaveORT {
		backends = []string{models.BackendORT, models.BackendGo}
	}
	url, key := startStack(b, dir, backends)
	for r := 1; r <= rounds; r++ {
		for _, be := range backends {
			b.Run(fmt.Sprintf("round=%d/%s", r, be), func(b *testing.B) {
				target := url + "/v1/minilm-" + be + "/embeddings"
				drive(target, key, conc, 3*time.Second) // warm-up: connections, batch shapes
				for i := 0; i < b.N; i++ {
					load := loadAverage()
					res := drive(target, key, conc, time.Duration(secs)*time.Second)
					b.ReportMetric(res.rps, "req/s")
					b.ReportMetric(ms(res.p50), "p50-ms")
					b.ReportMetric(ms(res.p99), "p99-ms")
					b.ReportMetric(float64(res.failed), "failed")
					b.Logf("%s round %d: %.1f req/s, p50 %.1f ms, p99 %.1f ms, %d failed; load average %s → %s",
						be, r, res.rps, ms(res.p50), ms(res.p99), res.failed, load, loadAverage())
				}
			})
		}
	}
}

// startStack starts one runtime per backend (model minilm-BACKEND) and a
// gateway in front of them; it returns the gateway's URL and a key.
func startStack(b *testing.B, dir string, backends []string) (string, string) {
	db := pgtest.New(b, true)
	ctx := context.Background()
	id := func(sql string, args ...any) int64 {
		var id int64
		if err := db.Pool.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
		return id
	}
	acc := id(`INSERT INTO accounts(name, plan_id) VALUES ('bench', (SELECT id FROM plans WHERE name='standard')) RETURNING id`)
	k, prefix, hash, err := apikey.Generate()
	if err != nil {
		b.Fatal(err)
	}
	id(`INSERT INTO api_keys(account_id, prefix, hash, kind) VALUES ($1,$2,$3,'inference') RETURNING id`, acc, prefix, hash)
	callKey, err := artifactcred.CallKey(strings.Repeat("bench call secret ", 3))
	if err != nil {
		b.Fatal(err)
	}
	static := gateway.StaticDiscovery{}
	for _, be := range backends {
		name := "minilm-" + be
		mid := id(`INSERT INTO models(name, task) VALUES ($1,$2) RETURNING id`, name, runtimeapi.FeatureExtraction)
		id(`INSERT INTO deployments(model_id, version, replicas) VALUES ($1, 1, 1) RETURNING model_id`, mid)
		static[name] = []string{strings.TrimPrefix(startRuntime(b, dir, name, be, artifactcred.Call(callKey, name)), "http://")}
	}
	// no Redis: no rate limits, as a plan without limits
	g, err := gateway.New(ctx, gateway.Config{}, gateway.Deps{DB: db.Pool, Discovery: static, Registry: prometheus.NewRegistry(), CallKey: callKey})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(httpserver.Handler(g, httpserver.NewHealth(), nil))
	b.Cleanup(func() {
		srv.Close()
		_ = g.Close(context.Background())
	})
	return srv.URL, k
}

// startRuntime serves the model at dir on backend be as the runtime role
// does (its default batching and limits); it returns its URL.
func startRuntime(b *testing.B, dir, name, be, cred string) string {
	cfg := models.DefaultEngineConfig()
	cfg.Backend = be
	m, err := models.LoadWith(dir, name, runtimeapi.FeatureExtraction, cfg)
	if err != nil {
		b.Fatal(err)
	}
	// as the role does before it says it is ready: the Go backend compiles
	// its bucket shapes (cheapest first, up to WarmTimeout)
	wctx, cancelWarm := context.WithTimeout(context.Background(), cfg.WarmTimeout)
	_, err = m.Warm(wctx)
	cancelWarm()
	if err != nil && wctx.Err() == nil {
		b.Fatal(err)
	}
	met := models.NewMetrics(nil)
	bat := models.NewBatcher(m, models.DefaultBatchConfig(), met)
	ctx, cancel := context.WithCancel(context.Background())
	go bat.Run(ctx)
	rt := models.NewServer(name, runtimeapi.FeatureExtraction, "sha256:bench", bat, models.DefaultLimits(), met, slog.New(slog.DiscardHandler))
	rt.SetBackend(m.Backend)
	rt.SetReady(true)
	rt.SetCallCredential(cred)
	srv := httptest.NewServer(rt)
	b.Cleanup(func() {
		srv.Close()
		cancel()
		m.Close()
	})
	return srv.URL
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	failed   int
}

// drive sends one short text a request from conc clients in a loop for d.
func drive(url, key string, conc int, d time.Duration) result {
	var mu sync.Mutex
	var lat []time.Duration
	failed := 0
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"text":"what a wonderful concert and a great evening"}`))
				req.Header.Set("Authorization", "Token "+key)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					bad++
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat, failed = append(lat, mine...), failed+bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		return result{failed: failed}
	}
	slices.Sort(lat)
	return result{rps: float64(len(lat)) / d.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], failed: failed}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
