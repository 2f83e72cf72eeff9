package deployments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkCanary is issue 20's canary through the real stack (TestEndToEnd's
// subtest, the gateway of canarygw merged): the sentiment fixture pushed
// again and deployed as a 10 % canary beside the stable version; the split
// counted from real traffic (X-Model-Version); `status` showing both
// versions with their figures; a promote while clients loop, with no failed
// request; then a canary that fails at inference rolled back automatically
// within its window, the failed requests bounded by its weight.
//
// The failing version is the sentiment fixture with max_position_embeddings
// (config.json) and model_max_length (tokenizer_config.json) raised to 4096:
// the upload's smoke inference ("hello world", 4 tokens) passes, but the
// runtime then cuts texts at 4096 tokens instead of the 64 positions the
// ONNX graph has, so any text of more than 62 words' worth of tokens fails
// inside the model (the position embeddings' Add gets shapes [1 N 64] and
// [1 64 64]) and the runtime answers 500. The stable version cuts the same
// long texts at 64 tokens and answers them.
func checkCanary(t *testing.T, root string, cli func(args ...string) string, token []byte, key string) {
	fixture := filepath.Join(root, "..", "shared", "fixtures", "nlp", "sentiment")
	admin := "Bearer " + strings.TrimSpace(string(token))
	api := func(method, path string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://127.0.0.1:8081"+path, nil)
		req.Header.Set("Authorization", admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	type dep struct {
		Version  int `json:"version"`
		Replicas int `json:"replicas"`
		Canary   *struct {
			Version  int    `json:"version"`
			State    string `json:"state"`
			Reason   string `json:"reason"`
			Status   string `json:"status"`
			Observed struct {
				Running int `json:"running"`
			} `json:"observed"`
		} `json:"canary"`
	}
	status := func() dep {
		var d dep
		api("GET", "/api/v1/models/sentiment/deployment", &d)
		return d
	}
	pushed := regexp.MustCompile(`pushed sentiment version (\d+)`)
	push := func(dir string) int {
		t.Helper()
		out := cli("models", "push", "sentiment", dir)
		m := pushed.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("push: %s", out)
		}
		v, _ := strconv.Atoi(m[1])
		return v
	}
	// one customer request: the version that answered (X-Model-Version) and
	// whether it failed
	client := &http.Client{Timeout: 30 * time.Second}
	call := func(text string) (version string, code int, err error) {
		bb, _ := json.Marshal(map[string]string{"text": text})
		req, _ := http.NewRequest("POST", "http://127.0.0.1:8080/v1/sentiment/sentiment", bytes.NewReader(bb))
		req.Header.Set("Authorization", "Token "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.Header.Get("X-Model-Version"), resp.StatusCode, nil
	}
	// loop runs 4 clients of text until stop is closed, counting answers
	// by version and failures (429s apart)
	type tally struct {
		mu       sync.Mutex
		versions map[string]int
		ok       atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
	}
	loop := func(text string, stop chan struct{}) (*tally, *sync.WaitGroup) {
		tl := &tally{versions: map[string]int{}}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					v, code, err := call(text)
					switch {
					case code == http.StatusTooManyRequests:
					case err != nil || code != 200:
						tl.failed.Add(1)
						tl.firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %v (version %q)", code, err, v))
					default:
						tl.ok.Add(1)
						tl.mu.Lock()
						tl.versions[v]++
						tl.mu.Unlock()
					}
				}
			}()
		}
		return tl, &wg
	}

	// 1. a 10 % canary of the same fixture pushed again
	stable := status().Version
	v := push(fixture)
	t.Logf("$ nlpswarm deploy sentiment --version %d --canary 10%% --replicas 1 --wait\n%s", v,
		cli("deploy", "sentiment", "--version", strconv.Itoa(v), "--canary", "10%", "--replicas", "1", "--memory", "512M", "--wait", "--timeout", "5m"))
	// the canary's replica is in Swarm's DNS a healthcheck after it runs
	waitFor(t, time.Minute, func() bool { ver, code, _ := call("i love this movie"); return code == 200 && ver == strconv.Itoa(v) })

	// 2. the split, from real traffic
	const n = 2000
	counts := map[string]int{}
	var cmu sync.Mutex
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				ver, code, err := call("i love this movie")
				if err != nil || code != 200 {
					t.Errorf("request during the split: %d %v", code, err)
					return
				}
				cmu.Lock()
				counts[ver]++
				cmu.Unlock()
			}
		}()
	}
	wg.Wait()
	share := 100 * float64(counts[strconv.Itoa(v)]) / n
	t.Logf("split over %d requests: %v (canary %.1f%%)", n, counts, share)
	if counts[strconv.Itoa(stable)]+counts[strconv.Itoa(v)] != n || share < 7.5 || share > 12.5 {
		t.Fatalf("split %v: canary share %.1f%%, want 10%% ± 2.5 (3 standard deviations at %d requests)", counts, share, n)
	}

	// 3. status shows both versions, each with its figures
	time.Sleep(2 * time.Second) // the gateway publishes its figures each second
	st := cli("status", "sentiment")
	t.Logf("$ nlpswarm status sentiment\n%s", st)
	for _, want := range []string{"canary 10%", "canary: version " + strconv.Itoa(v) + ", canary 10%, active", "per version:"} {
		if !strings.Contains(st, want) {
			t.Fatalf("status lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^`+strconv.Itoa(stable)+`\s+live\s+\d+`).MatchString(st) || !regexp.MustCompile(`(?m)^`+strconv.Itoa(v)+`\s+live\s+\d+`).MatchString(st) {
		t.Fatalf("status lacks a figures row per version")
	}

	// 4. promote while clients loop: no request fails
	stop := make(chan struct{})
	tl, lwg := loop("i love this movie", stop)
	time.Sleep(2 * time.Second)
	start := time.Now()
	t.Logf("$ nlpswarm promote sentiment --wait\n%s", cli("promote", "sentiment", "--wait", "--timeout", "5m"))
	promoted := time.Since(start)
	// and on until the canary's service is gone (after its drain)
	waitFor(t, 2*time.Minute, func() bool {
		out, err := exec.Command("docker", "service", "ls", "-q", "--filter", "name=nlp-sentiment_canary").Output()
		return err == nil && strings.TrimSpace(string(out)) == ""
	})
	time.Sleep(2 * time.Second)
	close(stop)
	lwg.Wait()
	t.Logf("promote: %s to retire the canary, %d requests answered during the promote and the canary's removal (by version %v), %d failed (first: %v)",
		promoted.Round(100*time.Millisecond), tl.ok.Load(), tl.versions, tl.failed.Load(), tl.firstErr.Load())
	if tl.failed.Load() != 0 {
		t.Fatalf("%d requests failed during the promote", tl.failed.Load())
	}
	if d := status(); d.Version != v || d.Canary == nil || d.Canary.State != "promoted" {
		t.Fatalf("after the promote: %+v", d)
	}
	if ver, code, _ := call("i love this movie"); code != 200 || ver != strconv.Itoa(v) {
		t.Fatalf("after the promote version %q answers (%d), want %d", ver, code, v)
	}

	// 5. a canary that fails at inference, rolled back by its rule
	broken := t.TempDir()
	for _, f := range []string{"model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(fixture, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "config.json" || f == "tokenizer_config.json" {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if f == "config.json" {
				m["max_position_embeddings"] = 4096
			} else {
				m["model_max_length"] = 4096
			}
			b, _ = json.Marshal(m)
		}
		if err := os.WriteFile(filepath.Join(broken, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bad := push(broken)
	const window = 20 * time.Second
	t.Logf("$ nlpswarm deploy sentiment --version %d --canary 10%% --rollback-error-rate 5%% --rollback-window 20s --wait\n%s", bad,
		cli("deploy", "sentiment", "--version", strconv.Itoa(bad), "--canary", "10%", "--replicas", "1", "--memory", "512M",
			"--rollback-error-rate", "5%", "--rollback-window", window.String(), "--wait", "--timeout", "5m"))
	long := strings.Repeat("this movie is great and i loved every minute of it ", 12) // far over 64 tokens
	// the canary answers short texts; wait until it is in the routing
	waitFor(t, time.Minute, func() bool { ver, code, _ := call("i love this movie"); return code == 200 && ver == strconv.Itoa(bad) })
	stop = make(chan struct{})
	start = time.Now()
	tl, lwg = loop(long, stop)
	var rolledAfter time.Duration
	waitFor(t, window+30*time.Second, func() bool {
		d := status()
		if d.Canary != nil && d.Canary.State == "rolled_back" {
			rolledAfter = time.Since(start)
			return true
		}
		return false
	})
	sent := tl.ok.Load() + tl.failed.Load()
	failedAtRollback := tl.failed.Load()
	time.Sleep(3 * time.Second) // the gateways have the NOTIFY: no failure after it
	failedBefore := tl.failed.Load()
	time.Sleep(5 * time.Second)
	close(stop)
	lwg.Wait()
	rate := float64(sent) / rolledAfter.Seconds()
	bound := 0.10 * rate * window.Seconds()
	d := status()
	t.Logf("automatic rollback %s after the failing traffic began: %d of %d requests failed until then (bound weight × window = 10%% × %.0f req/s × %s = %.0f); reason: %s",
		rolledAfter.Round(100*time.Millisecond), failedAtRollback, sent, rate, window, bound, d.Canary.Reason)
	if rolledAfter > window+10*time.Second {
		t.Fatalf("rolled back after %s, beyond its window of %s", rolledAfter, window)
	}
	if float64(failedAtRollback) > bound || failedAtRollback == 0 {
		t.Fatalf("%d requests failed before the rollback, want 1..%.0f", failedAtRollback, bound)
	}
	if tl.failed.Load() != failedBefore {
		t.Fatalf("%d requests failed after the rollback had reached the gateways", tl.failed.Load()-failedBefore)
	}
	if !strings.HasPrefix(d.Canary.Reason, "rolled back automatically: error rate") || d.Version != v {
		t.Fatalf("after the automatic rollback: version %d, reason %q", d.Version, d.Canary.Reason)
	}
	st = cli("status", "sentiment")
	t.Logf("$ nlpswarm status sentiment\n%s", st)
	if !strings.Contains(st, "rolled_back: rolled back automatically: error rate") {
		t.Fatal("status does not say why the canary was rolled back")
	}
}
