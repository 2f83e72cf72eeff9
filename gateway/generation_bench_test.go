package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest/fakellama"
)

// Generation relay benchmark (issue 15): what the gateway adds to a
// streamed generation, against a fake replica (fakellama) streaming
// genBenchTokens tokens, one every genBenchInterval, as a model generating
// at a fixed rate does. Each round streams once per worker directly from
// the replica (with its call credential) and once through the gateway
// (API key, admission, usage, the usage event asked for and stripped),
// alternately, so that both see the same machine. Reported per
// concurrency: time to first token (request sent to first content event)
// at p50 and p99 for both, the gateway's added p99, and tokens/s through
// the gateway over tokens/s direct (aggregate: all tokens over the rounds'
// time). Run it with make bench-generation (BENCHMARKS.md has figures).
func BenchmarkGenerationRelay(b *testing.B) {
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) { benchGenerationRelay(b, conc) })
	}
}

const (
	genBenchTokens   = 32
	genBenchInterval = 2 * time.Millisecond
)

func benchGenerationRelay(b *testing.B, conc int) {
	e := newEnv(b, false)
	key, _ := e.key(e.account("acme", "standard"), "inference")
	f := fakellama.StartWith(callAuth("gen"), fakellama.Options{Tokens: genBenchTokens, Interval: genBenchInterval})
	b.Cleanup(f.Close)
	e.id(`INSERT INTO models(name, task) VALUES ('gen','text-generation') RETURNING id`)
	e.exec(`INSERT INTO deployments(model_id, version, replicas) SELECT id, 1, 1 FROM models WHERE name = 'gen'`)
	e.static["gen"] = []string{f.Addr()}
	e.start(Config{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	body := []byte(`{"model":"gen","stream":true,"messages":[{"role":"user","content":"hello"}],"max_tokens":32}`)
	targets := []struct {
		name, url, auth string
		ttft            []time.Duration
		tokens          int
		elapsed         time.Duration
	}{
		{name: "direct", url: f.URL + "/v1/chat/completions", auth: callAuth("gen")},
		{name: "gateway", url: e.srv.URL + "/v1/chat/completions", auth: "Bearer " + key},
	}
	stream := func(url, auth string) (time.Duration, int, error) {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		var ttft time.Duration
		n := 0
		for {
			line, err := br.ReadString('\n')
			if strings.HasPrefix(line, "data: {") && strings.Contains(line, `"content"`) {
				if n == 0 {
					ttft = time.Since(t0)
				}
				n++
			}
			if err != nil {
				break
			}
		}
		if n != genBenchTokens {
			return 0, 0, fmt.Errorf("%d tokens, want %d", n, genBenchTokens)
		}
		return ttft, n, nil
	}
	round := func(record bool) {
		for ti := range targets {
			t := &targets[ti]
			var mu sync.Mutex
			var wg sync.WaitGroup
			var failed error
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ttft, n, err := stream(t.url, t.auth)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed = err
						return
					}
					t.ttft = append(t.ttft, ttft)
					t.tokens += n
				}()
			}
			wg.Wait()
			if failed != nil {
				b.Fatalf("%s: %v", t.name, failed)
			}
			if !record {
				t.ttft, t.tokens = t.ttft[:0], 0
				continue
			}
			t.elapsed += time.Since(start)
		}
	}
	// a round not counted: the key's first look-up, the connections' dials
	round(false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round(true)
	}
	b.StopTimer()
	pct := func(d []time.Duration, p int) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, len(s)*p/100)]
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	direct, gw := &targets[0], &targets[1]
	tpsDirect := float64(direct.tokens) / direct.elapsed.Seconds()
	tpsGW := float64(gw.tokens) / gw.elapsed.Seconds()
	b.ReportMetric(ms(pct(direct.ttft, 99)), "ttft-p99-direct-ms")
	b.ReportMetric(ms(pct(gw.ttft, 99)), "ttft-p99-gateway-ms")
	b.ReportMetric(ms(pct(gw.ttft, 99)-pct(direct.ttft, 99)), "ttft-p99-added-ms")
	b.ReportMetric(tpsGW/tpsDirect, "tokps-ratio")
	fmt.Printf("concurrency %d, %d streams each: TTFT p50 direct %.2f ms, gateway %.2f ms; p99 direct %.2f ms, gateway %.2f ms (added %.2f ms); tokens/s direct %.0f, gateway %.0f (%.3fx)\n",
		conc, len(gw.ttft), ms(pct(direct.ttft, 50)), ms(pct(gw.ttft, 50)), ms(pct(direct.ttft, 99)), ms(pct(gw.ttft, 99)),
		ms(pct(gw.ttft, 99)-pct(direct.ttft, 99)), tpsDirect, tpsGW, tpsGW/tpsDirect)
}
