package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/apierror"
	"github.com/nlpswarm/nlpswarm/internal/customerapi"
)

// The answers of the tasks, as the gateway writes them.
type (
	Label            = customerapi.Label
	Entity           = customerapi.Entity
	LabelsAnswer     = customerapi.LabelsAnswer
	EntitiesAnswer   = customerapi.EntitiesAnswer
	EmbeddingsAnswer = customerapi.EmbeddingsAnswer
	// text generation (NLP Cloud's shapes)
	GenerationRequest = customerapi.GenerationRequest
	GenerationAnswer  = customerapi.GenerationAnswer
	ChatbotRequest    = customerapi.ChatbotRequest
	ChatbotAnswer     = customerapi.ChatbotAnswer
	Exchange          = customerapi.Exchange
)

// Task is a task of the customer API with the type of its answer for one
// text.
type Task[A any] struct{ name string }

// The tasks.
var (
	Sentiment      = Task[LabelsAnswer]{customerapi.TaskSentiment}
	Classification = Task[LabelsAnswer]{customerapi.TaskClassification}
	Entities       = Task[EntitiesAnswer]{customerapi.TaskEntities}
	Embeddings     = Task[EmbeddingsAnswer]{customerapi.TaskEmbeddings}
)

// Name is the task's name in the route.
func (t Task[A]) Name() string { return t.name }

// Client calls one gateway with one API key. It is safe for concurrent use.
type Client struct {
	base     string // without a trailing slash
	key      string
	http     *http.Client
	retries  int
	backoff  time.Duration
	maxWait  time.Duration
	maxBytes int64
}

// Option tunes New.
type Option func(*Client)

// WithHTTPClient sends the requests through hc (default: a client of its
// own with no overall timeout: the context bounds each call).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithRetries sets how many times a call is retried after a 429 or 503
// (default 4; 0: never).
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithBackoff sets the first wait between tries when the answer has no
// Retry-After (doubled each try, with jitter; default 200 ms) and the
// longest wait the client accepts (default 30 s): an answer asking for a
// longer one (a monthly quota used up) is returned as it is.
func WithBackoff(first, longest time.Duration) Option {
	return func(c *Client) { c.backoff, c.maxWait = first, longest }
}

// WithMaxResponseBytes bounds the answer the client reads (default 64 MiB).
func WithMaxResponseBytes(n int64) Option { return func(c *Client) { c.maxBytes = n } }

// New returns a client of the gateway at baseURL (http://host:port) with
// an inference API key.
func New(baseURL, key string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("nlpswarm client: base URL %q: want http(s)://host[:port]", baseURL)
	}
	if key == "" || strings.ContainsAny(key, " \r\n") {
		return nil, errors.New("nlpswarm client: an API key (one word) is required")
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), key: key, http: &http.Client{},
		retries: 4, backoff: 200 * time.Millisecond, maxWait: 30 * time.Second, maxBytes: 64 << 20}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer of the API.
type Error struct {
	Status     int           // the HTTP status
	Code       string        // the API's error code (see the reference), "" when the body had none
	Message    string        // for people
	Details    []string      // optional
	RequestID  string        // the answer's X-Request-ID: quote it when reporting a problem
	RetryAfter time.Duration // the answer's Retry-After, 0 when none
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nlpswarm: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Retryable reports whether the same call may succeed later: a 429 or a
// 503 (the client retries those by itself first).
func (e *Error) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable
}

// Run runs task on model for one text. params, when not nil, is sent as
// the request's "parameters" (an object; its fields depend on the task).
func Run[A any](ctx context.Context, c *Client, model string, task Task[A], text string, params any) (A, error) {
	var out A
	req, err := request(customerapi.Request{Text: &text}, params)
	if err != nil {
		return out, err
	}
	err = c.do(ctx, customerapi.TaskPath(model, task.name), req, &out)
	return out, err
}

// RunBatch runs task on model for several texts: one answer per text, in
// order.
func RunBatch[A any](ctx context.Context, c *Client, model string, task Task[A], texts []string, params any) ([]A, error) {
	if len(texts) == 0 {
		return nil, errors.New("nlpswarm client: no texts")
	}
	req, err := request(customerapi.Request{Texts: texts}, params)
	if err != nil {
		return nil, err
	}
	var out customerapi.Results[A]
	if err := c.do(ctx, customerapi.TaskPath(model, task.name), req, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(texts) {
		return nil, fmt.Errorf("nlpswarm client: %d answers for %d texts", len(out.Results), len(texts))
	}
	return out.Results, nil
}

func request(r customerapi.Request, params any) ([]byte, error) {
	if params != nil {
		p, err := json.Marshal(params)
		if err != nil {
			return nil, fmt.Errorf("nlpswarm client: parameters: %w", err)
		}
		r.Parameters = p
	}
	return json.Marshal(r)
}

// Sentiment runs the sentiment task on model for one text.
func (c *Client) Sentiment(ctx context.Context, model, text string) (LabelsAnswer, error) {
	return Run(ctx, c, model, Sentiment, text, nil)
}

// Classify runs the classification task on model for one text.
func (c *Client) Classify(ctx context.Context, model, text string) (LabelsAnswer, error) {
	return Run(ctx, c, model, Classification, text, nil)
}

// Entities runs the entities task on model for one text.
func (c *Client) Entities(ctx context.Context, model, text string) (EntitiesAnswer, error) {
	return Run(ctx, c, model, Entities, text, nil)
}

// Embed runs the embeddings task on model for one text.
func (c *Client) Embed(ctx context.Context, model, text string) (EmbeddingsAnswer, error) {
	return Run(ctx, c, model, Embeddings, text, nil)
}

// Infer sends an Open Inference Protocol v2 inference request (any value
// that encodes to one) to model and returns the answer's JSON.
func (c *Client) Infer(ctx context.Context, model string, req any) (json.RawMessage, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("nlpswarm client: infer request: %w", err)
	}
	var out json.RawMessage
	err = c.do(ctx, customerapi.InferPath(model), body, &out)
	return out, err
}

// Generate continues req.Text on a text-generation model
// (POST /v1/{model}/generation). For OpenAI's routes (streaming included),
// use OpenAI's own SDK with the gateway's /v1 as its base URL.
func (c *Client) Generate(ctx context.Context, model string, req GenerationRequest) (GenerationAnswer, error) {
	return postJSON[GenerationAnswer](ctx, c, customerapi.TaskPath(model, customerapi.TaskGeneration), req)
}

// Chatbot answers req.Input in a conversation on a text-generation model
// (POST /v1/{model}/chatbot); the answer's History is the next request's.
func (c *Client) Chatbot(ctx context.Context, model string, req ChatbotRequest) (ChatbotAnswer, error) {
	return postJSON[ChatbotAnswer](ctx, c, customerapi.TaskPath(model, customerapi.TaskChatbot), req)
}

// postJSON posts req, encoded, to path and decodes the answer as an A.
func postJSON[A any](ctx context.Context, c *Client, path string, req any) (A, error) {
	var out A
	body, err := json.Marshal(req)
	if err != nil {
		return out, fmt.Errorf("nlpswarm client: request to %s: %w", path, err)
	}
	err = c.do(ctx, path, body, &out)
	return out, err
}

// do posts body to path and decodes a 200 into out, retrying 429 and 503.
func (c *Client) do(ctx context.Context, path string, body []byte, out any) error {
	for try := 0; ; try++ {
		err := c.once(ctx, path, body, out)
		var ae *Error
		if err == nil || !errors.As(err, &ae) || !ae.Retryable() || try >= c.retries {
			return err
		}
		wait := ae.RetryAfter
		if wait > c.maxWait {
			return err // (a monthly quota used up: not worth waiting for)
		}
		if wait == 0 {
			wait = min(c.backoff<<min(try, 20), c.maxWait)
			wait = wait/2 + rand.N(wait/2+1) // jitter: callers refused together do not come back together
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return err // the answer is known now: no point in sleeping past the deadline
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (waiting to retry after %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Client) once(ctx context.Context, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("nlpswarm client: %w", err)
	}
	req.Header.Set("Authorization", "Token "+c.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nlpswarm-go-client")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("nlpswarm client: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return fmt.Errorf("nlpswarm client: POST %s: reading the answer: %w", path, err)
	}
	if int64(len(raw)) > c.maxBytes {
		return fmt.Errorf("nlpswarm client: POST %s: answer over %d bytes", path, c.maxBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return answerError(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("nlpswarm client: POST %s: malformed answer: %w", path, err)
	}
	return nil
}

func answerError(resp *http.Response, raw []byte) *Error {
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID"), RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"))}
	var b apierror.Body
	if json.Unmarshal(raw, &b) == nil && b.Error.Code != "" {
		e.Code, e.Message, e.Details = b.Error.Code, b.Error.Message, b.Error.Details
	} else {
		e.Message = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// ParseRetryAfter reads a Retry-After header: seconds or an HTTP date; 0
// when absent or unreadable. The ops CLI reads the backoffice's with it too.
func ParseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(max(s, 0)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
