package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/client"
	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
)

// counting counts the requests a client sends.
type counting struct{ n atomic.Int64 }

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

func newClient(t *testing.T, url, key string, opts ...client.Option) (*client.Client, *counting) {
	t.Helper()
	cnt := &counting{}
	c, err := client.New(url, key, append([]client.Option{client.WithHTTPClient(&http.Client{Transport: cnt})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c, cnt
}

func TestTasks(t *testing.T) {
	c, _ := newClient(t, shared.URL, shared.Key)
	ctx := context.Background()
	s, err := c.Sentiment(ctx, gatewaytest.Sentiment, "great")
	if err != nil || len(s.ScoredLabels) != 2 || s.ScoredLabels[0] != (client.Label{Label: "POSITIVE", Score: 0.9}) {
		t.Fatalf("sentiment: %+v %v", s, err)
	}
	cl, err := client.RunBatch(ctx, c, gatewaytest.Sentiment, client.Classification, []string{"a", "b", "c"}, map[string]any{"top_k": 1})
	if err != nil || len(cl) != 3 || cl[2].ScoredLabels[0].Label != "POSITIVE" {
		t.Fatalf("classification batch: %+v %v", cl, err)
	}
	ents, err := c.Entities(ctx, gatewaytest.NER, "Alice went home")
	if err != nil || len(ents.Entities) != 1 || ents.Entities[0] != (client.Entity{Text: "Alice", Type: "PER", Start: 0, End: 5, Score: 0.99}) {
		t.Fatalf("entities: %+v %v", ents, err)
	}
	emb, err := client.RunBatch(ctx, c, gatewaytest.Embed, client.Embeddings, []string{"a", "abcd"}, nil)
	if err != nil || len(emb) != 2 || emb[1].Embeddings[0][2] != 4 {
		t.Fatalf("embeddings batch: %+v %v", emb, err)
	}
	raw, err := c.Infer(ctx, gatewaytest.Sentiment, map[string]any{"inputs": []map[string]any{{"name": "text", "shape": []int{1}, "datatype": "BYTES", "data": []string{"great"}}}})
	var inf struct {
		ModelName string `json:"model_name"`
		Outputs   []struct {
			Data []string `json:"data"`
		} `json:"outputs"`
	}
	if err != nil || json.Unmarshal(raw, &inf) != nil || inf.ModelName != "sentiment" || !strings.Contains(inf.Outputs[0].Data[0], "POSITIVE") {
		t.Fatalf("infer: %s %v", raw, err)
	}
}

// Refusals come back as *client.Error with the API's code, status and the
// request's ID; those that no retry can change are not retried.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	good, cnt := newClient(t, shared.URL, shared.Key)
	bad, _ := newClient(t, shared.URL, "nlp_zzzzzzzz_"+strings.Repeat("a", 32))
	for _, tt := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"bad key", func() error { _, err := bad.Sentiment(ctx, gatewaytest.Sentiment, "x"); return err }, 401, "unauthorized"},
		{"no model", func() error { _, err := good.Sentiment(ctx, "nope", "x"); return err }, 404, "model_not_found"},
		{"wrong task", func() error { _, err := good.Embed(ctx, gatewaytest.Sentiment, "x"); return err }, 400, "task_not_supported"},
		{"empty text", func() error { _, err := good.Sentiment(ctx, gatewaytest.Sentiment, ""); return err }, 400, "invalid_request"},
		{"bad params", func() error {
			_, err := client.Run(ctx, good, gatewaytest.Sentiment, client.Sentiment, "x", []int{1})
			return err
		}, 400, "invalid_request"},
		{"model path", func() error { _, err := good.Sentiment(ctx, "../v2", "x"); return err }, 404, "model_not_found"},
	} {
		before := cnt.n.Load()
		err := tt.call()
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code || ae.Message == "" || ae.RequestID == "" {
			t.Errorf("%s: %#v, want %d %s with a message and a request ID", tt.name, err, tt.status, tt.code)
			continue
		}
		if ae.Retryable() || !strings.Contains(err.Error(), tt.code) {
			t.Errorf("%s: %q retryable=%v", tt.name, err, ae.Retryable())
		}
		if n := cnt.n.Load() - before; n != 1 && tt.name != "bad key" {
			t.Errorf("%s: %d requests, want 1 (no retry)", tt.name, n)
		}
	}
	for _, u := range []string{"", "ftp://x", "http://", "localhost:8080"} {
		if _, err := client.New(u, "k"); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	if _, err := client.New(shared.URL, ""); err == nil {
		t.Error("New without a key accepted")
	}
}

// A 429 rate_limited with Retry-After is retried after that delay, and
// succeeds; without retries it comes back with its Retry-After.
func TestRetryAfterRateLimit(t *testing.T) {
	env := gatewaytest.Start(t, gatewaytest.Options{Redis: true})
	ctx := context.Background()
	c, cnt := newClient(t, env.URL, env.SlowKey)
	if _, err := c.Sentiment(ctx, gatewaytest.Sentiment, "x"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Sentiment(ctx, gatewaytest.Sentiment, "x"); err != nil {
		t.Fatalf("the retried call failed: %v", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || cnt.n.Load() < 3 {
		t.Errorf("the second call took %v in %d requests in all: it did not wait for Retry-After", d, cnt.n.Load())
	}
	once, _ := newClient(t, env.URL, env.SlowKey, client.WithRetries(0))
	_, err := once.Sentiment(ctx, gatewaytest.Sentiment, "x")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 429 || ae.Code != "rate_limited" || ae.RetryAfter < time.Second || !ae.Retryable() {
		t.Fatalf("without retries: %#v", err)
	}
}

// A 503 no_replica is retried as often as asked, each after Retry-After;
// a context deadline shorter than the wait ends the call at once with the
// answer, and a context that ends during the wait ends it then.
func TestRetry503AndDeadlines(t *testing.T) {
	c, cnt := newClient(t, shared.URL, shared.Key, client.WithRetries(1))
	start := time.Now()
	_, err := c.Sentiment(context.Background(), gatewaytest.Asleep, "x")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != "no_replica" || ae.RetryAfter != time.Second {
		t.Fatalf("asleep: %#v", err)
	}
	if d := time.Since(start); cnt.n.Load() != 2 || d < 900*time.Millisecond {
		t.Errorf("%d requests in %v, want 2 a Retry-After apart", cnt.n.Load(), d)
	}

	c, cnt = newClient(t, shared.URL, shared.Key)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Sentiment(ctx, gatewaytest.Asleep, "x")
	if !errors.As(err, &ae) || ae.Code != "no_replica" || time.Since(start) > 400*time.Millisecond || cnt.n.Load() != 1 {
		t.Errorf("deadline shorter than Retry-After: %v after %v and %d requests; want the answer at once", err, time.Since(start), cnt.n.Load())
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	_, err = c.Sentiment(ctx, gatewaytest.Asleep, "x")
	if !errors.Is(err, context.Canceled) || !errors.As(err, &ae) || time.Since(start) > 800*time.Millisecond {
		t.Errorf("canceled while waiting: %v after %v", err, time.Since(start))
	}
}

func TestGeneration(t *testing.T) {
	c, _ := newClient(t, shared.URL, shared.Key)
	ctx := context.Background()
	n := 5
	g, err := c.Generate(ctx, gatewaytest.Gen, client.GenerationRequest{Text: "Once", MaxLength: &n, RemoveInput: true})
	if err != nil || g.GeneratedText != "tok tok tok tok tok " || g.NbGeneratedTokens != 5 || g.NbInputTokens != 7 {
		t.Fatalf("generate: %+v %v", g, err)
	}
	ch, err := c.Chatbot(ctx, gatewaytest.Gen, client.ChatbotRequest{Input: "hi", History: []client.Exchange{{Input: "a", Response: "b"}}})
	if err != nil || ch.Response == "" || len(ch.History) != 2 || ch.History[1].Input != "hi" {
		t.Fatalf("chatbot: %+v %v", ch, err)
	}
	var ae *client.Error
	if _, err := c.Generate(ctx, gatewaytest.Sentiment, client.GenerationRequest{Text: "x"}); !errors.As(err, &ae) || ae.Code != "task_not_supported" {
		t.Fatalf("generation on a sentiment model: %v", err)
	}
}
