package models

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/modelmgr/onnxcheck/onnxtest"
)

// callLog records each pipeline call's texts, sleeping per call and per
// text as a model does.
type callLog struct {
	mu    sync.Mutex
	calls [][]string
}

func (f *callLog) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	f.mu.Lock()
	f.calls = append(f.calls, append([]string(nil), texts...))
	f.mu.Unlock()
	time.Sleep(time.Millisecond + time.Duration(len(texts))*100*time.Microsecond)
	out := make([]any, len(texts))
	for i, t := range texts {
		out[i] = "echo:" + t
	}
	return out, nil
}

// runBatcher runs a batcher of a callLog model with cfg until the test
// ends.
func runBatcher(t *testing.T, cfg BatchConfig) (*Batcher, *callLog, context.Context) {
	f := &callLog{}
	b := NewBatcher(f, cfg, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go b.Run(ctx)
	return b, f, ctx
}

func (f *callLog) snapshot() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.calls...)
}

// A background request (a job's texts) runs in parts of an eighth of a
// batch, never in one pipeline call with interactive texts; interactive
// requests sent while it runs are answered long before it is done, each
// after at most one part; and the background request gets every output in
// order.
func TestBackgroundYieldsToInteractive(t *testing.T) {
	cfg := BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: time.Millisecond, Queue: 64}
	b, f, ctx := runBatcher(t, cfg)

	const n = 800 // 200 parts of 4 texts: at least 280 ms of calls
	bg := make([]string, n)
	for i := range bg {
		bg[i] = fmt.Sprintf("job-%d", i)
	}
	var bgDone time.Time
	errc := make(chan error, 1)
	go func() {
		out, err := b.SubmitBackground(ctx, bg, nil, Params{})
		bgDone = time.Now()
		if err == nil && len(out) != n {
			err = fmt.Errorf("background: %d outputs for %d texts", len(out), n)
		}
		for i := 0; err == nil && i < len(out); i++ {
			if out[i] != "echo:"+bg[i] {
				err = fmt.Errorf("background output %d is %v", i, out[i])
			}
		}
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)

	// four interactive clients, one text per request, while the job runs
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	var lastAnswer time.Time
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				t0 := time.Now()
				out, err := b.SubmitCounted(ctx, []string{fmt.Sprintf("live-%d-%d", c, i)}, nil, Params{})
				took := time.Since(t0)
				if err != nil || len(out) != 1 {
					t.Errorf("interactive: %v %v", out, err)
					return
				}
				mu.Lock()
				worst, lastAnswer = max(worst, took), time.Now()
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !lastAnswer.Before(bgDone) {
		t.Errorf("the interactive requests finished after the background one")
	}
	mixed, bgCalls := 0, 0
	for _, call := range f.snapshot() {
		jobTexts := 0
		for _, txt := range call {
			if strings.HasPrefix(txt, "job-") {
				jobTexts++
			}
		}
		if jobTexts > 0 {
			bgCalls++
			if jobTexts != len(call) {
				mixed++
			}
			if jobTexts > cfg.MaxSize/partsPerBatch {
				t.Errorf("a background call of %d texts; parts are at most %d", jobTexts, cfg.MaxSize/partsPerBatch)
			}
		}
	}
	if mixed > 0 {
		t.Errorf("%d pipeline calls mixed background and interactive texts", mixed)
	}
	if bgCalls != n/(cfg.MaxSize/partsPerBatch) {
		t.Errorf("%d background calls, want %d", bgCalls, n/(cfg.MaxSize/partsPerBatch))
	}
	// an interactive request waits for one part (1.4 ms) and its own call:
	// far below a whole batch of job texts; the bound leaves room for a
	// loaded machine
	if worst > 100*time.Millisecond {
		t.Errorf("an interactive request took %v beside the job", worst)
	}
	t.Logf("worst interactive latency beside the job: %v", worst)
}

// While background work waits, interactive requests that arrive together
// are not held for the batching window (here 300 ms, far above the time the
// test allows): the model would idle through it, and the requests arrived
// together only because a background part held them.
func TestNoBatchingWindowWhileBackgroundWaits(t *testing.T) {
	cfg := BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: 300 * time.Millisecond, Queue: 64}
	b, _, ctx := runBatcher(t, cfg)
	bg := make([]string, 400) // 100 parts: at least 140 ms of calls
	for i := range bg {
		bg[i] = fmt.Sprintf("job-%d", i)
	}
	bgErr := make(chan error, 1)
	go func() { _, err := b.SubmitBackground(ctx, bg, nil, Params{}); bgErr <- err }()
	time.Sleep(5 * time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	for round := 0; round < 5; round++ {
		for c := 0; c < 3; c++ { // together: company for the next batch
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				if _, err := b.SubmitCounted(ctx, []string{fmt.Sprintf("live-%d-%d", round, c)}, nil, Params{}); err != nil {
					t.Error(err)
				}
				mu.Lock()
				worst = max(worst, time.Since(t0))
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if err := <-bgErr; err != nil {
		t.Fatal(err)
	}
	if worst >= cfg.MaxDelay {
		t.Errorf("an interactive request took %v beside background work: held for the %v batching window", worst, cfg.MaxDelay)
	}
	t.Logf("worst interactive latency: %v", worst)
}

// The runtime's /predict takes runtimeapi.PathPredictBackground's query as
// background work (answered as any request), and without it interactive.
func TestPredictBackgroundRoute(t *testing.T) {
	f := &callLog{}
	hs := newTestServer(t, f, TextClassification, DefaultBatchConfig(), DefaultLimits())
	for _, path := range []string{runtimeapi.PathPredict, runtimeapi.PathPredictBackground} {
		texts := make([]string, 9)
		for i := range texts {
			texts[i] = fmt.Sprintf("%s-%d", path, i)
		}
		if code, out := post(t, hs.URL+path, `{"texts":["`+strings.Join(texts, `","`)+`"]}`); code != http.StatusOK {
			t.Fatalf("%s: %d %v", path, code, out)
		}
	}
	// 9 interactive texts in one call; 9 background texts in parts of 4
	var sizes []int
	for _, c := range f.snapshot() {
		sizes = append(sizes, len(c))
	}
	if fmt.Sprint(sizes) != "[9 4 4 1]" {
		t.Errorf("pipeline calls of %v texts, want [9 4 4 1]", sizes)
	}
}

// nanFake scores every text normally except "poison", whose scores are NaN
// (a broken version's weights).
type nanFake struct{}

func (nanFake) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	out := make([]any, len(texts))
	for i, t := range texts {
		s := 0.9
		if t == "poison" {
			s = math.NaN()
		}
		out[i] = []Label{{Label: "POSITIVE", Score: s}, {Label: "NEGATIVE", Score: 1 - s}}
	}
	return out, nil
}

// A model output JSON cannot hold (NaN) is the runtime's 500 with the
// house error body: before, the runtime sent 200 and then failed to encode
// the answer, so the caller got 200 with an empty body. Texts beside it in
// other requests are answered as usual.
func TestNonFiniteOutputIs500(t *testing.T) {
	hs := newTestServer(t, nanFake{}, TextClassification, DefaultBatchConfig(), DefaultLimits())
	code, out := post(t, hs.URL+runtimeapi.PathPredict, `{"texts":["fine","poison"]}`)
	e, _ := out["error"].(map[string]any)
	if code != http.StatusInternalServerError || e["code"] != "inference_failed" || !strings.Contains(fmt.Sprint(e["message"]), "text 1") {
		t.Fatalf("poisoned text: %d %v", code, out)
	}
	if code, out := post(t, hs.URL+runtimeapi.PathPredict, `{"texts":["fine"]}`); code != http.StatusOK || len(out["outputs"].([]any)) != 1 {
		t.Fatalf("a fine text: %d %v", code, out)
	}
	for _, c := range []struct {
		o    any
		want int
	}{
		{[]Label{{Score: 0.5}}, -1},
		{[]Entity{{Score: math.Inf(1)}}, 0},
		{Embedding{Embedding: []float32{0, float32(math.NaN())}}, 0},
	} {
		if got := nonFinite([]any{c.o}); got != c.want {
			t.Errorf("nonFinite(%v) = %d, want %d", c.o, got, c.want)
		}
	}
}

// A real broken version: the sentiment fixture with the word embedding of
// "love" set to NaN (onnxtest.PoisonRows) warms up, answers texts without
// the word, and answers 500 inference_failed for texts with it.
func TestPoisonedModelIs500(t *testing.T) {
	hs := poisonedServer(t)
	if code, out := post(t, hs.URL+runtimeapi.PathPredict, `{"texts":["what a boring movie"]}`); code != http.StatusOK {
		t.Fatalf("a text without the word: %d %v", code, out)
	}
	if code, out := post(t, hs.URL+runtimeapi.PathPredict, `{"texts":["i love this movie"]}`); code != http.StatusInternalServerError {
		t.Fatalf("a text with the word: %d %v", code, out)
	}
}

// poisonedServer serves the sentiment fixture with the word embedding of
// "love" NaN: it passes the warm-up, texts with the word get NaN scores.
func poisonedServer(t *testing.T) *httptest.Server {
	t.Helper()
	src := fixture(t, "sentiment")
	files, err := onnxtest.FixtureFiles(src)
	if err != nil {
		t.Fatal(err)
	}
	var tk struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(files["tokenizer.json"], &tk); err != nil {
		t.Fatal(err)
	}
	if files["model.onnx"], err = onnxtest.PoisonRows(files["model.onnx"], "word_embeddings.weight", []int{tk.Model.Vocab["love"]}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Load(dir, "sentiment", TextClassification)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Warm(context.Background()); err != nil {
		t.Fatalf("the broken version fails its warm-up: %v", err)
	}
	return newTestServer(t, m, TextClassification, DefaultBatchConfig(), DefaultLimits())
}

// A large interactive request (over a batch: run in parts) sent while
// background work flows is interactive too: its parts run before the
// background's, and it is answered long before the background request.
func TestLargeInteractiveBeforeBackground(t *testing.T) {
	cfg := BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: time.Millisecond, Queue: 64}
	b, _, ctx := runBatcher(t, cfg)
	bg := make([]string, 800) // 200 parts: at least 280 ms of calls
	for i := range bg {
		bg[i] = fmt.Sprintf("job-%d", i)
	}
	bgDone := make(chan time.Time, 1)
	go func() {
		if _, err := b.SubmitBackground(ctx, bg, nil, Params{}); err != nil {
			t.Error(err)
		}
		bgDone <- time.Now()
	}()
	time.Sleep(5 * time.Millisecond)
	large := make([]string, 64)
	for i := range large {
		large[i] = fmt.Sprintf("live-%d", i)
	}
	t0 := time.Now()
	out, err := b.SubmitCounted(ctx, large, nil, Params{})
	took, answered := time.Since(t0), time.Now()
	if err != nil || len(out) != len(large) || out[63] != "echo:live-63" {
		t.Fatalf("large interactive: %d outputs, %v", len(out), err)
	}
	if done := <-bgDone; !answered.Before(done) {
		t.Errorf("the large interactive request was answered after the background one")
	}
	if took > 150*time.Millisecond {
		t.Errorf("the large interactive request took %v beside background work", took)
	}
	t.Logf("large interactive request beside background work: %v", took)
}
