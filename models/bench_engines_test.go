package models

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// minilm is the MiniLM-sized random-weight encoder that
// models/testdata/gen/minilm.py writes (`make minilm`), named by
// NLPSWARM_MINILM_DIR; the benchmarks skip it when absent.
func minilm(t testing.TB) string {
	t.Helper()
	d := os.Getenv("NLPSWARM_MINILM_DIR")
	if d == "" {
		t.Skip("NLPSWARM_MINILM_DIR unset: make minilm writes bin/minilm")
	}
	if _, err := os.Stat(d); err != nil {
		t.Skipf("minilm %s absent (%v)", d, err)
	}
	return d
}

// engines are the backends this binary can run: go always, ort in the ORT
// build where libonnxruntime loads; NLPSWARM_BENCH_ENGINE=ort (or go)
// keeps one (the Go backend takes minutes on the MiniLM-sized model).
func engines() []EngineConfig {
	out := []EngineConfig{{Backend: BackendGo}}
	if HaveORT {
		out = append(out, EngineConfig{Backend: BackendORT})
	}
	if only := os.Getenv("NLPSWARM_BENCH_ENGINE"); only != "" {
		out = slices.DeleteFunc(out, func(e EngineConfig) bool { return e.Backend != only })
	}
	return out
}

// msPerText times pipeline calls on texts after one warm-up call (which
// compiles the shape on the Go backend): at least one call, then until a
// second has passed or 20 calls (the Go backend takes minutes per call on
// the MiniLM-sized model at batch 32).
func msPerText(tb testing.TB, m *Model, texts []string, p Params) float64 {
	ctx := context.Background()
	if _, err := m.Predict(ctx, texts, p); err != nil {
		tb.Fatal(err)
	}
	calls, start := 0, time.Now()
	for calls < 1 || (time.Since(start) < time.Second && calls < 20) {
		if _, err := m.Predict(ctx, texts, p); err != nil {
			tb.Fatal(err)
		}
		calls++
	}
	return float64(time.Since(start).Microseconds()) / 1000 / float64(calls*len(texts))
}

// BenchmarkEngines: ms per text on each backend side by side, at batch 1, 8
// and 32, on the sentiment fixture and the MiniLM-sized encoder (texts
// truncated to its 128 tokens). speedup is go/ort. Run it in the ORT image
// to have both (make bench-ort); the plain build has go only.
func BenchmarkEngines(b *testing.B) {
	cases := []struct {
		name, task string
		dir        func(testing.TB) string
		text       string
	}{
		{"sentiment", TextClassification, func(t testing.TB) string { return fixture(t, "sentiment") }, "what a wonderful concert and a great evening"},
		{"minilm", FeatureExtraction, minilm, strings.Repeat("what a wonderful concert and a great evening ", 40)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := c.dir(b)
			var p Params
			if err := p.Check(c.task); err != nil {
				b.Fatal(err)
			}
			var loaded []*Model
			for _, eng := range engines() {
				m, err := LoadWith(dir, c.name, c.task, eng)
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				if m.Backend != eng.Backend {
					b.Fatalf("asked for %s, got %s", eng.Backend, m.Backend)
				}
				loaded = append(loaded, m)
			}
			for _, n := range []int{1, 8, 32} {
				texts := make([]string, n)
				for i := range texts {
					texts[i] = c.text
				}
				b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						ms := map[string]float64{}
						for _, m := range loaded {
							ms[m.Backend] = msPerText(b, m, texts, p)
							b.ReportMetric(ms[m.Backend], m.Backend+"-ms/text")
						}
						if ms[BackendORT] > 0 && ms[BackendGo] > 0 {
							b.ReportMetric(ms[BackendGo]/ms[BackendORT], "speedup")
						}
					}
				})
			}
		})
	}
}

// BenchmarkBatchGain: the most dynamic batching can gain through /predict,
// the engine's own: ms per text of the MiniLM-sized encoder on the load
// generator's short text (about 12 tokens) at batch 1, 8 and 32, on each
// engine (NLPSWARM_BENCH_ENGINE keeps one), with NLPSWARM_BENCH_THREADS
// intra-op threads (0: the CPUs; one setting a process, since ORT's
// environment cannot be made again in a process once destroyed). gain is
// ms per text at batch 1 over batch 32.
func BenchmarkBatchGain(b *testing.B) {
	dir := minilm(b)
	var p Params
	if err := p.Check(FeatureExtraction); err != nil {
		b.Fatal(err)
	}
	threads := benchEnv("NLPSWARM_BENCH_THREADS", 0)
	for _, eng := range engines() {
		// loaded once, outside b.Run, which runs its function more than once
		cfg := eng
		cfg.Threads = threads
		m, err := LoadWith(dir, "minilm", FeatureExtraction, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		b.Run(fmt.Sprintf("%s/threads=%d", eng.Backend, threads), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				per := map[int]float64{}
				for _, n := range []int{1, 8, 32} {
					texts := make([]string, n)
					for j := range texts {
						texts[j] = "what a wonderful concert and a great evening"
					}
					per[n] = msPerText(b, m, texts, p)
					b.ReportMetric(per[n], fmt.Sprintf("b%d-ms/text", n))
				}
				b.ReportMetric(per[1]/per[32], "gain")
			}
		})
	}
}
