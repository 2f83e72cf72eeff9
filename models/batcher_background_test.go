package models

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
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
	f := &callLog{}
	cfg := BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: time.Millisecond, Queue: 64}
	b := NewBatcher(f, cfg, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)

	const n = 400 // 100 parts of 4 texts: at least 140 ms of calls
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
