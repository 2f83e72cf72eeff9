package llamaimage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/benchload"
	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// TestContinuousBatchingGain is issue 15's "aggregate tokens/s at
// concurrency 16 vs 1 on one replica": the image's generate role on the
// parity model, 16 slots (continuous batching) and, beside it, 1 slot (each
// request waits for the one before), each driven by 1 and by 16 clients
// sending 64-token completions back to back. A benchmark, not a timed
// test: it asserts nothing about speed and runs only with
// NLPSWARM_BENCH=1 (make bench-llama); it prints a table.
func TestContinuousBatchingGain(t *testing.T) {
	image := os.Getenv("LLAMA_IMAGE")
	if image == "" || os.Getenv("NLPSWARM_BENCH") != "1" {
		t.Skip("a benchmark: NLPSWARM_BENCH=1 and LLAMA_IMAGE (make bench-llama)")
	}
	_, gguf := loadReference(t)
	const cred = "call-credential-of-tiny"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	window := 20 * time.Second
	if d, err := time.ParseDuration(os.Getenv("NLPSWARM_BENCH_WINDOW")); err == nil {
		window = d
	}
	rows := []string{"| slots | clients | completions | completion tokens/s | p50 latency | p99 latency |", "| --- | --- | --- | --- | --- | --- |"}
	var base1 float64
	for _, slots := range []int{16, 1} {
		base := runRoleWith(ctx, t, image, gguf, cred, slots)
		for _, clients := range []int{1, 16} {
			r := drive(ctx, t, base, cred, clients, window)
			if slots == 16 && clients == 1 {
				base1 = r.tps
			}
			rows = append(rows, fmt.Sprintf("| %d | %d | %d | %.0f | %s | %s |", slots, clients, r.n, r.tps, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond)))
			if slots == 16 && clients == 16 && base1 > 0 {
				t.Logf("continuous batching: %.2f× the aggregate tokens/s of one client on the same replica", r.tps/base1)
			}
		}
	}
	t.Logf("ggufgen.TinyLlama (%d hidden, %d layers), 64-token greedy completions, %s per row, one replica, 2 threads:\n%s",
		ggufgen.TinyHidden, ggufgen.TinyLayers, window, strings.Join(rows, "\n"))
}

// runRoleWith is runRole with slots slots of 256 positions and 2 threads.
func runRoleWith(ctx context.Context, t *testing.T, image string, gguf []byte, cred string, slots int) string {
	t.Helper()
	return runRole(ctx, t, image, gguf, cred, "--generation.parallel", fmt.Sprint(slots),
		"--generation.context", "256", "--generation.threads", "2")
}

type driven struct {
	n        int64
	tps      float64
	p50, p99 time.Duration
}

// drive sends 64-token completions from clients clients back to back for
// window and sums the completion tokens the answers report.
func drive(ctx context.Context, t *testing.T, base, cred string, clients int, window time.Duration) driven {
	t.Helper()
	var tokens, n atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	end := time.Now().Add(window)
	start := time.Now()
	var wg sync.WaitGroup
	cl := &http.Client{Timeout: time.Minute}
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				body := fmt.Sprintf(`{"prompt":"The cat sat on the mat %d %d","max_tokens":64,"temperature":0}`, c, i)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+cred)
				t0 := time.Now()
				resp, err := cl.Do(req)
				if err != nil {
					t.Errorf("completion: %v", err)
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var a struct {
					Usage struct {
						Completion int64 `json:"completion_tokens"`
					} `json:"usage"`
				}
				if resp.StatusCode != 200 || json.Unmarshal(raw, &a) != nil {
					t.Errorf("completion: %d %s", resp.StatusCode, raw)
					return
				}
				d := time.Since(t0)
				tokens.Add(a.Usage.Completion)
				n.Add(1)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	return driven{n: n.Load(), tps: float64(tokens.Load()) / el.Seconds(), p50: benchload.Quantile(lat, 0.5), p99: benchload.Quantile(lat, 0.99)}
}
