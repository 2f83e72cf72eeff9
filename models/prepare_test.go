package models

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// prepareTexts: ordinary, long English, long without a space, long with
// accents (whose offsets the Go tokenizer reports loosely), long CJK.
func prepareTexts() []string {
	return []string{
		"what a wonderful concert",
		strings.Repeat("what a wonderful concert and a great evening in Paris with Alice. ", 250),
		strings.Repeat("x", 16<<10),
		strings.Repeat("héllo wörld, ünïcode café in Zürich with Zoë. ", 350),
		strings.Repeat("日本語のテキスト、東京。", 1000),
		"",
	}
}

// Prepare changes no output: each text cut where its kept tokens end
// answers as the whole text, uncut, straight to the pipeline; and the
// ordinary English text is cut to about what the model reads.
func TestPrepareKeepsOutputs(t *testing.T) {
	ctx := context.Background()
	texts := prepareTexts()
	for _, c := range []struct{ fixture, task string }{{"sentiment", TextClassification}, {"ner", TokenClassification}, {"embeddings", FeatureExtraction}} {
		m, err := LoadWith(fixture(t, c.fixture), c.fixture, c.task, EngineConfig{Backend: BackendGo})
		if err != nil {
			t.Fatal(err)
		}
		var p Params
		if err := p.Check(c.task); err != nil {
			t.Fatal(err)
		}
		cut, counts, err := m.Prepare(texts)
		if err != nil {
			t.Fatal(err)
		}
		maxPos := m.pipelineModel().MaxPositionEmbeddings
		for i, txt := range texts {
			got, err := m.Predict(ctx, cut[i:i+1], p)
			if err != nil {
				t.Fatal(err)
			}
			whole, err := m.predictBatch(texts[i:i+1], p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, whole) {
				t.Errorf("%s text %d: cut (%d bytes) %v\nwhole %v", c.fixture, i, len(cut[i]), got, whole)
			}
			if !strings.HasPrefix(txt, cut[i]) || counts[i] > maxPos || (txt != "" && counts[i] < 3) {
				t.Errorf("%s text %d: cut %d of %d bytes, %d tokens (max %d)", c.fixture, i, len(cut[i]), len(txt), counts[i], maxPos)
			}
		}
		if n := len(cut[1]); n > maxPos*4 {
			t.Errorf("%s: English text cut to %d bytes, want at most %d", c.fixture, n, maxPos*4)
		}
		if counts[1] != maxPos {
			t.Errorf("%s: long text counted %d tokens, want %d", c.fixture, counts[1], maxPos)
		}
		m.Close()
	}
}

// Prepare runs on many request goroutines at once (go test -race).
func TestPrepareConcurrent(t *testing.T) {
	m := sentiment(t)
	texts := prepareTexts()
	want, wantN, err := m.Prepare(texts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, n, err := m.Prepare(texts)
			if err != nil || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(n, wantN) {
				t.Errorf("concurrent Prepare differs: %v", err)
			}
		}()
	}
	wg.Wait()
}

// The caps per request answer 413 with the house error body; a request
// within them answers.
func TestRequestCaps(t *testing.T) {
	m := sentiment(t)
	lim := DefaultLimits()
	lim.MaxTotalChars, lim.MaxTokens = 1000, 200
	hs := newTestServer(t, m, TextClassification, DefaultBatchConfig(), lim)
	texts := func(n int, s string) string {
		q := make([]string, n)
		for i := range q {
			q[i] = fmt.Sprintf("%q", s)
		}
		return `{"texts":[` + strings.Join(q, ",") + `]}`
	}
	long := strings.Repeat("what a wonderful concert ", 20) // 500 characters, over 64 tokens
	for _, c := range []struct {
		name, body, code string
		status           int
	}{
		{"within", texts(3, "what a wonderful concert"), "", 200},
		{"chars", texts(3, long), "request_too_long", 413},
		{"tokens", texts(4, long[:240]), "too_many_tokens", 413}, // 4 × 64 tokens
		{"tokens within", texts(3, long[:240]), "", 200},
	} {
		status, body := post(t, hs.URL+"/predict", c.body)
		if status != c.status {
			t.Errorf("%s: status %d, want %d (%v)", c.name, status, c.status, body)
			continue
		}
		if c.code == "" {
			continue
		}
		e, _ := body["error"].(map[string]any)
		if e["code"] != c.code || e["message"] == "" {
			t.Errorf("%s: error %v, want code %s and a message", c.name, body, c.code)
		}
	}
	// the v2 route holds the same caps
	status, body := post(t, hs.URL+"/v2/models/sentiment/infer",
		`{"inputs":[{"name":"text","datatype":"BYTES","shape":[4],"data":[`+strings.Repeat(fmt.Sprintf("%q,", long[:240]), 3)+fmt.Sprintf("%q", long[:240])+`]}]}`)
	if e, _ := body["error"].(map[string]any); status != 413 || e["code"] != "too_many_tokens" {
		t.Errorf("v2 infer over the token cap: %d %v", status, body)
	}
}

// tokenFake records the tokens of each call; its texts are "<tokens>".
type tokenFake struct {
	slowFake
	tokens []int
}

func (f *tokenFake) Predict(ctx context.Context, texts []string, p Params) ([]any, error) {
	_, n, _ := f.Prepare(texts)
	sum := 0
	for _, k := range n {
		sum += k
	}
	f.mu.Lock()
	f.tokens = append(f.tokens, sum)
	f.mu.Unlock()
	return f.slowFake.Predict(ctx, texts, p)
}

func (f *tokenFake) Prepare(texts []string) ([]string, []int, error) {
	n := make([]int, len(texts))
	for i, t := range texts {
		fmt.Sscan(t, &n[i])
	}
	return texts, n, nil
}

// The batcher gathers no more tokens into one call than MaxTokens, and a
// request with more than MaxTokens runs alone.
func TestBatchTokenBudget(t *testing.T) {
	f := &tokenFake{}
	b := NewBatcher(f, BatchConfig{MaxSize: 32, MaxTokens: 100, MaxDelay: 20 * time.Millisecond, Queue: 256}, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	var wg sync.WaitGroup
	sizes := []int{40, 40, 40, 150, 30, 30, 30, 30, 60}
	for _, n := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			texts := []string{fmt.Sprint(n)}
			if _, err := b.SubmitCounted(ctx, texts, []int{n}, Params{}); err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.tokens) < 5 {
		t.Errorf("%d calls for %d tokens in a budget of 100: %v", len(f.tokens), 450, f.tokens)
	}
	for _, tok := range f.tokens {
		if tok > 100 && tok != 150 {
			t.Errorf("a call of %d tokens (budget 100): %v", tok, f.tokens)
		}
	}
}

func TestPlan(t *testing.T) {
	cfg := BatchConfig{MaxSize: 32, MaxTokens: 4096}
	rep := func(n, tok int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = tok
		}
		return out
	}
	for _, c := range []struct {
		name   string
		tokens []int
		n      int
		want   [][2]int
	}{
		{"fits", rep(32, 128), 32, [][2]int{{0, 32}}},
		{"uncounted fits", nil, 32, [][2]int{{0, 32}}},
		{"uncounted, 20 texts", nil, 20, [][2]int{{0, 20}}},
		{"too many texts", rep(40, 1), 40, chunks(40, 4)},
		{"uncounted, 33 texts", nil, 33, [][2]int{{0, 4}, {4, 8}, {8, 12}, {12, 16}, {16, 20}, {20, 24}, {24, 28}, {28, 32}, {32, 33}}},
		{"too many tokens", rep(20, 256), 20, chunks(20, 2)},
		{"one text over an eighth", []int{2000, 10, 3000}, 3, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
		{"small texts after a large one", []int{600, 100, 100, 100, 100, 100, 4000}, 7, [][2]int{{0, 1}, {1, 5}, {5, 6}, {6, 7}}},
		{"64 × 16 KB on 64 positions", rep(64, 64), 64, chunks(64, 4)},
	} {
		if got := plan(c.tokens, c.n, cfg); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: plan %v, want %v", c.name, got, c.want)
		}
	}
}

// perText sleeps per text, as a model does.
type perText struct{}

func (f *perText) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	time.Sleep(time.Duration(len(texts)) * time.Millisecond)
	out := make([]any, len(texts))
	for i, t := range texts {
		out[i] = "echo:" + t
	}
	return out, nil
}

// A small request sent while a large one runs is answered before the large
// one is done, and the large one still gets every output in order.
func TestLargeRequestInterleaves(t *testing.T) {
	b := NewBatcher(&perText{}, BatchConfig{MaxSize: 32, MaxTokens: 4096, MaxDelay: time.Millisecond, Queue: 16}, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	large := make([]string, 200)
	counts := make([]int, len(large))
	for i := range large {
		large[i], counts[i] = fmt.Sprint(i), 64
	}
	var largeDone atomic.Bool
	errc := make(chan error, 1)
	go func() {
		out, err := b.SubmitCounted(ctx, large, counts, Params{})
		largeDone.Store(true)
		if err == nil {
			for i, o := range out {
				if o != "echo:"+large[i] {
					err = fmt.Errorf("large output %d is %v", i, o)
					break
				}
			}
			if len(out) != len(large) {
				err = fmt.Errorf("large: %d outputs for %d texts", len(out), len(large))
			}
		}
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if _, err := b.SubmitCounted(ctx, []string{"small"}, []int{5}, Params{}); err != nil {
		t.Fatal(err)
	}
	if largeDone.Load() {
		t.Errorf("the small request waited for the large one (%v)", time.Since(start))
	}
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

// Encoding a head in pieces gives, field by field, what encoding it in one
// piece gives, on every fixture's tokenizer, for pieces of any size.
func TestEncodeHeadMatchesWhole(t *testing.T) {
	texts := append(prepareTexts(),
		strings.Repeat("a  double  spaced,text;with punctuation!and\ttabs\nand lines ", 60),
		strings.Repeat("Ünïcödé wörds ñ façade naïve coöperate 東京 タワー ", 80),
		strings.Repeat("supercalifragilisticexpialidocious antidisestablishmentarianism ", 40))
	for _, fx := range []string{"sentiment", "ner", "embeddings"} {
		for _, maxPos := range []int{8, 64, 200} {
			c, err := newTokenCounter(fixture(t, fx), maxPos)
			if err != nil {
				t.Fatal(err)
			}
			for i, txt := range texts {
				for _, first := range []int{7, 40, 300} {
					got, err := c.encodeHead(txt, first)
					if err != nil {
						t.Fatal(err)
					}
					// the head: what its offsets cover, to the next space
					n := len(txt)
					if k := len(got.Offsets) - 2; k >= 0 && got.Offsets[k][1] > 0 {
						if j := strings.IndexByte(txt[got.Offsets[k][1]:], ' '); j >= 0 {
							n = got.Offsets[k][1] + j
						}
					}
					want, err := c.tk.EncodeSingle(txt[:n], true)
					if err != nil {
						t.Fatal(err)
					}
					if len(got.Ids) <= maxPos && n != len(txt) {
						t.Errorf("%s/%d text %d first %d: %d tokens and stopped at byte %d of %d", fx, maxPos, i, first, len(got.Ids), n, len(txt))
					}
					for _, f := range []struct {
						name      string
						got, want any
					}{{"ids", got.Ids, want.Ids}, {"type ids", got.TypeIds, want.TypeIds}, {"tokens", got.Tokens, want.Tokens},
						{"offsets", got.Offsets, want.Offsets}, {"special", got.SpecialTokenMask, want.SpecialTokenMask},
						{"attention", got.AttentionMask, want.AttentionMask}, {"words", got.Words, want.Words}} {
						if !reflect.DeepEqual(f.got, f.want) {
							t.Errorf("%s/%d text %d first %d: %s differ\n got %v\nwant %v", fx, maxPos, i, first, f.name, short(f.got), short(f.want))
						}
					}
				}
			}
		}
	}
}

func short(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// BenchmarkPrepare: Prepare alone (the tokenizer, on the request's
// goroutine) on 64 texts each: ordinary, filling the model's positions
// (the long texts as Prepare cuts them), and 16 KB.
func BenchmarkPrepare(b *testing.B) {
	m := sentiment(b)
	long, short := qodTexts()
	full, _, err := m.Prepare(long)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		texts []string
	}{{"ordinary", short}, {"full", full}, {"16KB", long}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, _, err := m.Prepare(c.texts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
