package deployments

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
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

	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

// checkCanary is issue 20's canary through the real stack (TestEndToEnd's
// subtest, the gateway of canarygw merged): the sentiment fixture pushed
// again and deployed as a 10 % canary beside the stable version; the split
// counted from real traffic (X-Model-Version); `status` showing both
// versions with their figures; a promote while clients loop, with no failed
// request; then a canary rolled back automatically by its rule (a p99
// bound its real traffic breaks) within its window, with the reason in
// status; a broken version (NaN scores, the runtime's 500) rolled back by
// its error rate; and a shadow, whose copies change no customer's answer
// and whose agreement status shows. Each new canary comes within the
// previous one's drain and takes its service over: it is routed only once
// that service runs the new version, so no answer under the new version's
// name comes from the previous one.
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
		Versions []struct {
			Version        int     `json:"version"`
			Shadow         bool    `json:"shadow"`
			Requests       int64   `json:"requests"`
			Errors         int64   `json:"errors"`
			ShadowCompared int64   `json:"shadow_compared"`
			Agreement      float64 `json:"agreement"`
		} `json:"versions"`
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

	// 5. the automatic rule through the real stack: a canary whose p99
	// bound (1ms) its real traffic breaks is rolled back by the scheduler
	// from the gateways' figures, within its window, and status says why.
	bad := push(fixture)
	const window = 10 * time.Second
	t.Logf("$ nlpswarm deploy sentiment --version %d --canary 10%% --rollback-p99 1ms --rollback-window 10s --wait\n%s", bad,
		cli("deploy", "sentiment", "--version", strconv.Itoa(bad), "--canary", "10%", "--replicas", "1", "--memory", "512M",
			"--rollback-p99", "1ms", "--rollback-window", window.String(), "--wait", "--timeout", "5m"))
	stop = make(chan struct{})
	start = time.Now()
	tl, lwg = loop("i love this movie", stop)
	var rolledAfter time.Duration
	waitFor(t, window+60*time.Second, func() bool {
		d := status()
		if d.Canary != nil && d.Canary.State == "rolled_back" {
			rolledAfter = time.Since(start)
			return true
		}
		return false
	})
	time.Sleep(3 * time.Second)
	close(stop)
	lwg.Wait()
	d := status()
	t.Logf("automatic rollback %s after the canary's traffic began (window %s); %d requests, %d failed; reason: %s",
		rolledAfter.Round(100*time.Millisecond), window, tl.ok.Load()+tl.failed.Load(), tl.failed.Load(), d.Canary.Reason)
	if tl.failed.Load() != 0 || !strings.HasPrefix(d.Canary.Reason, "rolled back automatically: p99 latency") || d.Version != v {
		t.Fatalf("after the automatic rollback: version %d, reason %q, %d failed", d.Version, d.Canary.Reason, tl.failed.Load())
	}
	st = cli("status", "sentiment")
	t.Logf("$ nlpswarm status sentiment\n%s", st)
	if !strings.Contains(st, "rolled_back: rolled back automatically: p99 latency") {
		t.Fatal("status does not say why the canary was rolled back")
	}

	// 6. a broken version: its word embedding of "love" is NaN (as a bad
	// export or an fp16 overflow leaves it). It passes upload and the
	// runtime's warm-up (other words) and answers 500 for every text with
	// "love": the canary's error rate rolls it back within its window, and
	// the customers' failed requests are about its weight's share of the
	// requests until then.
	broken := t.TempDir()
	if err := poisonedFixture(fixture, broken, "love"); err != nil {
		t.Fatal(err)
	}
	nan := push(broken)
	t.Logf("$ nlpswarm deploy sentiment --version %d --canary 10%% --rollback-error-rate 20%% --rollback-window 10s --wait\n%s", nan,
		cli("deploy", "sentiment", "--version", strconv.Itoa(nan), "--canary", "10%", "--replicas", "1", "--memory", "512M",
			"--rollback-error-rate", "20%", "--rollback-window", window.String(), "--wait", "--timeout", "5m"))
	stop = make(chan struct{})
	start = time.Now()
	tl, lwg = loop("i love this movie", stop)
	rolledAfter = 0
	var before int64 // requests answered or failed until the rollback was seen
	waitFor(t, window+60*time.Second, func() bool {
		d := status()
		if d.Canary != nil && d.Canary.State == "rolled_back" {
			rolledAfter, before = time.Since(start), tl.ok.Load()+tl.failed.Load()
			return true
		}
		return false
	})
	failedAtRollback := tl.failed.Load()
	time.Sleep(3 * time.Second) // the gateways' catalogue follows within a second or two
	close(stop)
	lwg.Wait()
	d = status()
	t.Logf("error-rate rollback %s after the canary's traffic began (window %s): %d requests until then, %d failed (first: %v), %d failed in all of %d; reason: %s",
		rolledAfter.Round(100*time.Millisecond), window, before, failedAtRollback, tl.firstErr.Load(), tl.failed.Load(), tl.ok.Load()+tl.failed.Load(), d.Canary.Reason)
	if !strings.HasPrefix(d.Canary.Reason, "rolled back automatically: error rate") || d.Version != v {
		t.Fatalf("after the error-rate rollback: version %d, reason %q", d.Version, d.Canary.Reason)
	}
	// failures are the canary's share (10 %) of the requests until the
	// rollback reached the gateways: bounded with room for chance (3
	// standard deviations) and the last second's requests
	if bound := int64(0.1*float64(before)+3*math.Sqrt(0.09*float64(before))) + 50; tl.failed.Load() == 0 || tl.failed.Load() > bound {
		t.Fatalf("%d requests failed of %d until the rollback; want between 1 and %d", tl.failed.Load(), before, bound)
	}
	if ver, code, _ := call("i love this movie"); code != 200 || ver != strconv.Itoa(v) {
		t.Fatalf("after the error-rate rollback version %q answers (%d), want %d", ver, code, v)
	}

	// 7. a shadow: the fixture pushed once more gets a copy of every
	// request; the customers' answers all come from the stable version and
	// none fails, and status compares the two versions' answers (the same
	// model: every top label agrees). Then a manual rollback.
	sh := push(fixture)
	t.Logf("$ nlpswarm deploy sentiment --version %d --shadow --replicas 1 --wait\n%s", sh,
		cli("deploy", "sentiment", "--version", strconv.Itoa(sh), "--shadow", "--replicas", "1", "--memory", "512M", "--wait", "--timeout", "5m"))
	stop = make(chan struct{})
	tl, lwg = loop("i love this movie", stop)
	var compared int64
	var agreement float64
	waitFor(t, time.Minute, func() bool {
		for _, x := range status().Versions {
			if x.Version == sh && x.Shadow && x.ShadowCompared >= 100 {
				compared, agreement = x.ShadowCompared, x.Agreement
				return true
			}
		}
		return false
	})
	close(stop)
	lwg.Wait()
	st = cli("status", "sentiment")
	t.Logf("$ nlpswarm status sentiment\n%s", st)
	t.Logf("shadow: %d requests answered meanwhile (by version %v), %d failed (first: %v); %d copies compared, agreement %.1f%%",
		tl.ok.Load(), tl.versions, tl.failed.Load(), tl.firstErr.Load(), compared, agreement*100)
	if tl.failed.Load() != 0 || tl.versions[strconv.Itoa(sh)] != 0 || tl.ok.Load() == 0 {
		t.Fatalf("with a shadow the customers got %v answers by version and %d failures; want all from version %d", tl.versions, tl.failed.Load(), v)
	}
	if agreement != 1 {
		t.Fatalf("the shadow of the same model agreed on %.1f%% of %d copies, want 100%%", agreement*100, compared)
	}
	if !regexp.MustCompile(`(?m)^` + strconv.Itoa(sh) + `\s+shadow\s+\d+.*100\.0% of \d+`).MatchString(st) {
		t.Fatal("status lacks the shadow's row with its agreement")
	}
	t.Logf("$ nlpswarm rollback sentiment\n%s", cli("rollback", "sentiment"))
	if d := status(); d.Version != v || d.Canary == nil || d.Canary.State != "rolled_back" {
		t.Fatalf("after rolling the shadow back: %+v", d)
	}
}

// poisonedFixture copies the model folder src to dst with the word
// embedding of word (its token ID in tokenizer.json) set to NaN
// (onnxtest.PoisonRows): texts holding word get NaN scores, the rest
// normal ones.
func poisonedFixture(src, dst, word string) error {
	files, err := onnxtest.FixtureFiles(src)
	if err != nil {
		return err
	}
	var tk struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(files["tokenizer.json"], &tk); err != nil {
		return err
	}
	id, ok := tk.Model.Vocab[word]
	if !ok {
		return fmt.Errorf("%q is not a token of %s", word, src)
	}
	if files["model.onnx"], err = onnxtest.PoisonRows(files["model.onnx"], "word_embeddings.weight", []int{id}); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
