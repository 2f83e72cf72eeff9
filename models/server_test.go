package models

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"archive/tar"
	"compress/gzip"
)

var (
	sentOnce  sync.Once
	sentModel *Model
	sentErr   error
)

func sentiment(t testing.TB) *Model {
	dir := fixture(t, "sentiment")
	sentOnce.Do(func() { sentModel, sentErr = Load(dir, "sentiment", TextClassification) })
	if sentErr != nil {
		t.Fatal(sentErr)
	}
	return sentModel
}

func newTestServer(t testing.TB, p Predictor, task string, cfg BatchConfig, lim Limits) *httptest.Server {
	b := NewBatcher(p, cfg, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	go b.Run(ctx)
	s := NewServer("sentiment", task, "sha256:test", b, lim, NewMetrics(nil), slog.New(slog.DiscardHandler))
	s.SetReady(true)
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); cancel() })
	return hs
}

func post(t testing.TB, url, body string) (int, map[string]any) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// Bad input never kills the process: a 4xx error or a defined output, and the
// server stays ready.
func TestBadInput(t *testing.T) {
	hs := newTestServer(t, sentiment(t), TextClassification, DefaultBatchConfig(), DefaultLimits())
	many := `{"texts":[` + strings.Repeat(`"a",`, 5000) + `"a"]}`
	long := `{"texts":["` + strings.Repeat("x", 100_000) + `"]}`
	tests := []struct {
		name, body string
		want       int
	}{
		{"malformed json", `{"texts": [`, 400},
		{"wrong type", `{"texts": "not a list"}`, 400},
		{"number in list", `{"texts": [1, 2]}`, 400},
		{"unknown field", `{"text": "x"}`, 400},
		{"empty list", `{"texts": []}`, 400},
		{"missing texts", `{}`, 400},
		{"bad parameter", `{"texts": ["x"], "parameters": {"top_k": 0}}`, 400},
		{"unknown parameter", `{"texts": ["x"], "parameters": {"temperature": 1}}`, 400},
		{"invalid utf-8", "{\"texts\": [\"caf\xe9\xff\"]}", 200},
		{"lone surrogate", `{"texts": ["\ud800 x"]}`, 200},
		{"control characters", `{"texts": ["a\u0000b\u0007c\u001b[31m"]}`, 200},
		{"empty string", `{"texts": [""]}`, 200},
		{"whitespace", `{"texts": ["   \n\t "]}`, 200},
		{"emoji and scripts", `{"texts": ["😀 日本語 العربية"]}`, 200},
		{"100k characters", long, 413},
		{"thousands of texts", many, 413},
		{"trailing data", `{"texts": ["x"]} {}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, hs.URL+"/predict", tt.body)
			if code != tt.want {
				t.Fatalf("%d %v, want %d", code, body, tt.want)
			}
			if code >= 400 && body["error"] == nil {
				t.Fatalf("no error envelope: %v", body)
			}
			if code == 200 && len(body["outputs"].([]any)) != 1 {
				t.Fatalf("outputs: %v", body)
			}
		})
	}
	big := bytes.Repeat([]byte("a"), 64<<20)
	resp, err := http.Post(hs.URL+"/predict", "application/json", bytes.NewReader(big))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("64 MiB body: %d", resp.StatusCode)
		}
	}
	// a text longer than max_position_embeddings (64 tokens here) is truncated, not refused
	code, body := post(t, hs.URL+"/predict", `{"texts":["`+strings.Repeat("i love this movie ", 200)+`"]}`)
	if code != 200 {
		t.Fatalf("long text: %d %v", code, body)
	}
	if code, _ := post(t, hs.URL+"/v2/health/ready", ""); code != 405 {
		resp, _ := http.Get(hs.URL + "/v2/health/ready")
		if resp.StatusCode != 200 {
			t.Fatalf("not ready after bad input")
		}
	}
}

// The Open Inference Protocol's own example shapes.
func TestInferV2(t *testing.T) {
	hs := newTestServer(t, sentiment(t), TextClassification, DefaultBatchConfig(), DefaultLimits())
	for path, want := range map[string]int{"/v2/health/live": 200, "/v2/health/ready": 200, "/v2/models/sentiment": 200, "/v2/models/sentiment/ready": 200, "/v2/models/other": 404} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	code, body := post(t, hs.URL+"/v2/models/sentiment/infer", `{"id":"42","inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["i love this movie","the service was terrible"]}]}`)
	if code != 200 || body["id"] != "42" || body["model_name"] != "sentiment" {
		t.Fatalf("infer: %d %v", code, body)
	}
	out := body["outputs"].([]any)[0].(map[string]any)
	data := out["data"].([]any)
	var first []Label
	json.Unmarshal([]byte(data[0].(string)), &first)
	if out["datatype"] != "BYTES" || len(data) != 2 || first[0].Label != "POSITIVE" {
		t.Fatalf("output tensor: %v", out)
	}
	// shape [n,1] with nested data is allowed by the protocol
	if code, body := post(t, hs.URL+"/v2/models/sentiment/infer", `{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":[["i love this movie"]]}]}`); code != 200 {
		t.Fatalf("nested: %d %v", code, body)
	}
	for _, bad := range []string{
		`{"inputs":[{"name":"input0","shape":[1],"datatype":"BYTES","data":["x"]}]}`,
		`{"inputs":[{"name":"text","shape":[1],"datatype":"FP32","data":[1.0]}]}`,
		`{"inputs":[{"name":"text","shape":[3],"datatype":"BYTES","data":["x"]}]}`,
		`{"inputs":`,
	} {
		if code, _ := post(t, hs.URL+"/v2/models/sentiment/infer", bad); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}

func TestInferV2Embeddings(t *testing.T) {
	m, err := Load(fixture(t, "embeddings"), "sentiment", FeatureExtraction)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hs := newTestServer(t, m, FeatureExtraction, DefaultBatchConfig(), DefaultLimits())
	code, body := post(t, hs.URL+"/v2/models/sentiment/infer", `{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["i love this movie","hello"]}]}`)
	out := body["outputs"].([]any)[0].(map[string]any)
	shape := out["shape"].([]any)
	if code != 200 || out["datatype"] != "FP32" || shape[0].(float64) != 2 || shape[1].(float64) != 64 || len(out["data"].([]any)) != 128 {
		t.Fatalf("embeddings tensor: %d %v", code, out["shape"])
	}
}

// slowFake is a fake predictor that records batch sizes and can fail on a marker.
type slowFake struct {
	mu      sync.Mutex
	batches []int
}

func (f *slowFake) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	f.mu.Lock()
	f.batches = append(f.batches, len(texts))
	f.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	out := make([]any, len(texts))
	for i, t := range texts {
		if t == "poison" {
			return nil, errors.New("poisoned")
		}
		out[i] = "echo:" + t
	}
	return out, nil
}

// Concurrent callers are batched and each gets exactly its own outputs; a
// failing text fails only its own request.
func TestBatching(t *testing.T) {
	f := &slowFake{}
	b := NewBatcher(f, BatchConfig{MaxSize: 32, MaxDelay: 20 * time.Millisecond, Queue: 256}, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			texts := []string{fmt.Sprintf("r%d-a", i), fmt.Sprintf("r%d-b", i)}
			if i == 7 {
				texts[1] = "poison"
			}
			out, err := b.Submit(ctx, texts, Params{})
			if i == 7 {
				if err == nil {
					errs <- errors.New("poisoned request succeeded")
				}
				return
			}
			if err != nil {
				errs <- err
				return
			}
			for k, o := range out {
				if o != "echo:"+texts[k] {
					errs <- fmt.Errorf("request %d got %v for %s", i, o, texts[k])
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	maxBatch := 0
	for _, n := range f.batches {
		maxBatch = max(maxBatch, n)
	}
	if maxBatch < 4 {
		t.Fatalf("no batching happened: batches %v", f.batches)
	}
}

func TestQueueFull(t *testing.T) {
	block := make(chan struct{})
	b := NewBatcher(blocking(block), BatchConfig{MaxSize: 1, Queue: 1}, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	go b.Submit(ctx, []string{"a"}, Params{}) // taken by the worker, blocks
	time.Sleep(50 * time.Millisecond)
	go b.Submit(ctx, []string{"b"}, Params{}) // fills the queue
	time.Sleep(50 * time.Millisecond)
	if _, err := b.Submit(ctx, []string{"c"}, Params{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("want ErrQueueFull, got %v", err)
	}
	close(block)
}

type blocking chan struct{}

func (b blocking) Predict(_ context.Context, texts []string, _ Params) ([]any, error) {
	<-b
	return make([]any, len(texts)), nil
}

func tarGzDir(t testing.TB, dir string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []string{"model.onnx", "tokenizer.json", "config.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: f, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestFetch(t *testing.T) {
	arch := tarGzDir(t, fixture(t, "sentiment"))
	sum := sha256.Sum256(arch)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		hits++
		w.Write(arch)
	}))
	defer srv.Close()
	cache := t.TempDir()
	ctx := context.Background()
	res, err := Fetch(ctx, srv.URL, digest, "tok", cache)
	if err != nil || res.Cached {
		t.Fatalf("first fetch: %+v %v", res, err)
	}
	if _, err := Load(res.Dir, "sentiment", TextClassification); err != nil {
		t.Fatalf("load fetched model: %v", err)
	}
	res, err = Fetch(ctx, srv.URL, digest, "tok", cache)
	if err != nil || !res.Cached || hits != 1 {
		t.Fatalf("second fetch should use the cache: %+v %v hits=%d", res, err, hits)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)
	if _, err := Fetch(ctx, srv.URL, wrong, "tok", t.TempDir()); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := Fetch(ctx, srv.URL, digest, "bad", t.TempDir()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := Fetch(ctx, srv.URL, "md5:abc", "tok", t.TempDir()); err == nil {
		t.Fatal("bad digest accepted")
	}
}
