package models

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkPipeline: one pipeline call per batch size on the sentiment fixture.
func BenchmarkPipeline(b *testing.B) {
	m := sentiment(b)
	for _, n := range []int{1, 8, 32} {
		texts := make([]string, n)
		for i := range texts {
			texts[i] = "what a wonderful concert and a great evening"
		}
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			// the Go backend compiles a graph per input shape on first use
			if _, err := m.Predict(context.Background(), texts, Params{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.Predict(context.Background(), texts, Params{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "texts/s")
		})
	}
}

// loadRun is our load generator: conc workers send requests of one text for
// d and report requests/s and the median latency.
func loadRun(url string, conc int, d time.Duration) (rps float64, p50 time.Duration) {
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := client.Post(url, "application/json", strings.NewReader(`{"texts":["what a wonderful concert and a great evening"]}`))
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return 0, 0
	}
	return float64(len(lat)) / d.Seconds(), lat[len(lat)/2]
}

// benchEnv is the integer in the environment variable name, or def.
func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// BenchmarkBatching runs the load generator at concurrency 1, 8 and 32 with
// batching on (32 texts / 5 ms) and off, side by side in one run, on the
// sentiment fixture and, when NLPSWARM_MINILM_DIR names it, the MiniLM-sized
// encoder (where the model, not HTTP, is what a request costs). Knobs, for
// the MiniLM-sized model's engine and both fixtures' batching on:
// NLPSWARM_BENCH_THREADS (intra-op threads; 0: the CPUs),
// NLPSWARM_BENCH_MAXBATCH (32), NLPSWARM_BENCH_DELAY_MS (5).
func BenchmarkBatching(b *testing.B) {
	d := time.Duration(benchEnv("NLPSWARM_BENCH_SECONDS", 3)) * time.Second
	onCfg := BatchConfig{MaxSize: benchEnv("NLPSWARM_BENCH_MAXBATCH", 32), MaxTokens: 4096,
		MaxDelay: time.Duration(benchEnv("NLPSWARM_BENCH_DELAY_MS", 5)) * time.Millisecond, Queue: 512}
	models := []struct {
		name string
		load func(testing.TB) (*Model, string)
	}{
		{"sentiment", func(t testing.TB) (*Model, string) { return sentiment(t), TextClassification }},
		{"minilm", func(t testing.TB) (*Model, string) {
			cfg := DefaultEngineConfig()
			cfg.Threads = benchEnv("NLPSWARM_BENCH_THREADS", 0)
			m, err := LoadWith(minilm(t), "minilm", FeatureExtraction, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			return m, FeatureExtraction
		}},
	}
	for _, mc := range models {
		b.Run(mc.name, func(b *testing.B) {
			m, task := mc.load(b)
			on := newTestServer(b, m, task, onCfg, DefaultLimits())
			off := newTestServer(b, m, task, BatchConfig{MaxSize: 1, Queue: 512}, DefaultLimits())
			for _, conc := range []int{1, 8, 32} {
				b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						rOff, pOff := loadRun(off.URL+"/predict", conc, d)
						rOn, pOn := loadRun(on.URL+"/predict", conc, d)
						b.ReportMetric(rOff, "off-req/s")
						b.ReportMetric(rOn, "on-req/s")
						b.ReportMetric(rOn/max(rOff, 1e-9), "speedup")
						b.ReportMetric(float64(pOff.Microseconds()), "off-p50-µs")
						b.ReportMetric(float64(pOn.Microseconds()), "on-p50-µs")
					}
				})
			}
		})
	}
}

// TestRSSChild is re-executed by BenchmarkRSS: it loads one fixture, runs one
// inference and prints its resident set size.
func TestRSSChild(t *testing.T) {
	dir, task := os.Getenv("NLPSWARM_RSS_DIR"), os.Getenv("NLPSWARM_RSS_TASK")
	if dir == "" {
		t.Skip("run by BenchmarkRSS")
	}
	m, err := LoadWith(dir, "rss", task, EngineConfig{Backend: os.Getenv("NLPSWARM_RSS_BACKEND")})
	if err != nil {
		t.Fatal(err)
	}
	p := Params{}
	p.Check(task)
	m.Predict(context.Background(), []string{"warm up the model"}, p)
	f, _ := os.Open("/proc/self/status")
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "VmRSS:") || strings.HasPrefix(sc.Text(), "VmHWM:") {
			fmt.Println(sc.Text())
		}
	}
}

// BenchmarkRSS: resident memory of a process that loaded each fixture (and
// the MiniLM-sized model when NLPSWARM_MINILM_DIR names it) on each engine
// this binary has, and its ratio to model.onnx's size (the model manager's
// memory default).
func BenchmarkRSS(b *testing.B) {
	fixtures := []struct {
		name, task string
		dir        func(testing.TB) string
	}{{"sentiment", TextClassification, nil}, {"ner", TokenClassification, nil}, {"embeddings", FeatureExtraction, nil}, {"minilm", FeatureExtraction, minilm}}
	for _, fx := range fixtures {
		for _, eng := range engines() {
			b.Run(fx.name+"/"+eng.Backend, func(b *testing.B) {
				dir := fixture
				if fx.dir != nil {
					dir = func(t testing.TB, _ string) string { return fx.dir(t) }
				}
				rssChild(b, dir(b, fx.name), fx.task, eng.Backend)
			})
		}
	}
}

func rssChild(b *testing.B, dir, task, backend string) {
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRSSChild$", "-test.v")
		abs, _ := filepath.Abs(dir)
		cmd.Env = append(os.Environ(), "NLPSWARM_RSS_DIR="+abs, "NLPSWARM_RSS_TASK="+task, "NLPSWARM_RSS_BACKEND="+backend)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		var hwm int64
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				hwm, _ = strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			}
		}
		st, _ := os.Stat(filepath.Join(dir, "model.onnx"))
		b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
		b.ReportMetric(float64(st.Size())/1024, "onnx-KiB")
		b.ReportMetric(float64(hwm*1024)/float64(st.Size()), "RSS/onnx")
	}
}
