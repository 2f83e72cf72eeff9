// Package fakellama is a fake generation replica for tests: an HTTP server
// speaking llama-server's OpenAI-compatible JSON and Server-Sent Events
// (/v1/chat/completions, /v1/completions, /v1/embeddings) behind a model's
// call credential, as the generation runtime (generation/) serves them. It
// stands in for a replica where a test needs no model: the gateway's tests
// (relay, streaming, token accounting, limits) and gatewaytest's, which the
// OpenAI SDK drives. Streams send Tokens content chunks, each after Step
// gives a value (with Gate set; else at Interval), then the usage chunk
// when stream_options.include_usage asks for it, then data: [DONE].
//
// It is test support only: no role imports it.
package fakellama

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"
)

// PromptTokens is the prompt_tokens of every answer.
const PromptTokens = 7

// Server is a fake replica.
type Server struct {
	*httptest.Server
	// Auth is the Authorization value it requires ("" none).
	Auth string
	// Tokens is the content chunks of a stream and the completion_tokens
	// of every answer (Options.Tokens).
	Tokens int
	// Interval paces a stream's chunks when Gate is not set.
	Interval time.Duration
	// With Gate set, each chunk of a stream waits for a value on Step.
	Gate atomic.Bool
	Step chan struct{}
	// FailAfter drops the connection after this many chunks (0: never).
	FailAfter atomic.Int32
	// Status, when non-zero, is answered instead, with llama-server's
	// error object.
	Status atomic.Int32
	// Gone gets a value when a stream's client went away before its end
	// (dropped when full).
	Gone chan struct{}
	// Bodies gets each request's body (dropped when full).
	Bodies chan []byte
	// Requests counts the requests answered, Conns the connections
	// accepted.
	Requests, Conns atomic.Int64
}

// Options tune StartWith.
type Options struct {
	Tokens   int           // content chunks of a stream (0: 5)
	Interval time.Duration // between chunks (0: none)
}

// Start serves a fake replica requiring auth; it stops with Close.
func Start(auth string) *Server { return StartWith(auth, Options{}) }

// StartWith is Start with o.
func StartWith(auth string, o Options) *Server {
	if o.Tokens <= 0 {
		o.Tokens = 5
	}
	s := &Server{Auth: auth, Tokens: o.Tokens, Interval: o.Interval, Step: make(chan struct{}),
		Gone: make(chan struct{}, 16), Bodies: make(chan []byte, 64)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.Conns.Add(1)
		}
	}
	s.Start()
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return strings.TrimPrefix(s.URL, "http://") }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.Auth != "" && r.Header.Get("Authorization") != s.Auth {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"code":"unauthorized","message":"this model's call credential"}}`)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/v2/health/ready" {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	select {
	case s.Bodies <- body:
	default:
	}
	s.Requests.Add(1)
	if st := s.Status.Load(); st != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(st))
		fmt.Fprintf(w, `{"error":{"code":%d,"message":"forced by the test","type":"invalid_request_error"}}`, st)
		return
	}
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"code":400,"message":"invalid JSON","type":"invalid_request_error"}}`)
		return
	}
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, PromptTokens, s.Tokens, PromptTokens+s.Tokens)
	chat := r.URL.Path == "/v1/chat/completions"
	switch {
	case r.URL.Path == "/v1/embeddings":
		s.embeddings(w, body)
	case r.URL.Path != "/v1/completions" && !chat:
		http.NotFound(w, r)
	case !req.Stream:
		w.Header().Set("Content-Type", "application/json")
		text := strings.Repeat("tok ", s.Tokens)
		if chat {
			fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1765000000,"model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"length"}],"usage":%s}`, text, usage)
		} else {
			fmt.Fprintf(w, `{"id":"cmpl-1","object":"text_completion","created":1765000000,"model":"fake","choices":[{"index":0,"text":%q,"finish_reason":"length"}],"usage":%s}`, text, usage)
		}
	default:
		s.stream(w, r, chat, req.StreamOptions.IncludeUsage, usage)
	}
}

// Embedding is the fake embedding of input i of an /v1/embeddings request.
func Embedding(i int) []float64 { return []float64{0.1 + float64(i), 0.2, 0.3} }

// embeddings answers /v1/embeddings as llama-server does: one embedding per
// input (a string or a list of strings), in reverse order of index (a
// client must place them by index), PromptTokens per input in usage.
func (s *Server) embeddings(w http.ResponseWriter, body []byte) {
	var req struct {
		Input json.RawMessage `json:"input"`
	}
	_ = json.Unmarshal(body, &req)
	n := 1
	var list []string
	if json.Unmarshal(req.Input, &list) == nil && list != nil {
		n = len(list)
	}
	if n == 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"code":400,"message":"\"input\" must not be empty","type":"invalid_request_error"}}`)
		return
	}
	type datum struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	data := make([]datum, 0, n)
	for i := n - 1; i >= 0; i-- {
		data = append(data, datum{"embedding", i, Embedding(i)})
	}
	out, _ := json.Marshal(map[string]any{"object": "list", "model": "fake", "data": data,
		"usage": map[string]int{"prompt_tokens": PromptTokens * n, "total_tokens": PromptTokens * n}})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Chunk is content chunk i of a stream, as its data.
func Chunk(chat bool, i int) string {
	if chat {
		return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1765000000,"model":"fake","choices":[{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]}`, i)
	}
	return fmt.Sprintf(`{"id":"cmpl-1","object":"text_completion","created":1765000000,"model":"fake","choices":[{"index":0,"text":"tok%d ","finish_reason":null}]}`, i)
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, chat, includeUsage bool, usage string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	send := func(data string) bool {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	gate, failAfter := s.Gate.Load(), int(s.FailAfter.Load())
	for i := range s.Tokens {
		if gate {
			select {
			case <-s.Step:
			case <-r.Context().Done():
				s.gone()
				return
			}
		} else if s.Interval > 0 {
			select {
			case <-time.After(s.Interval):
			case <-r.Context().Done():
				s.gone()
				return
			}
		}
		if failAfter > 0 && i == failAfter {
			panic(http.ErrAbortHandler) // the connection drops, the stream unfinished
		}
		if !send(Chunk(chat, i)) {
			s.gone()
			return
		}
	}
	last := `{"id":"cmpl-1","object":"text_completion","created":1765000000,"model":"fake","choices":[{"index":0,"text":"","finish_reason":"length"}]}`
	if chat {
		last = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1765000000,"model":"fake","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`
	}
	send(last)
	if includeUsage {
		obj := "text_completion"
		if chat {
			obj = "chat.completion.chunk"
		}
		send(fmt.Sprintf(`{"id":"cmpl-1","object":%q,"created":1765000000,"model":"fake","choices":[],"usage":%s}`, obj, usage))
	}
	send("[DONE]")
}

func (s *Server) gone() {
	select {
	case s.Gone <- struct{}{}:
	default:
	}
}
