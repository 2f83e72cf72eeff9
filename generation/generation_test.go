package generation

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// The test binary doubles as a fake llama-server when GENERATION_FAKE is
// set (the child inherits the test's environment).
func TestMain(m *testing.M) {
	if os.Getenv("GENERATION_FAKE") != "" {
		fakeLlama(os.Args[1:])
		return
	}
	os.Exit(m.Run())
}

// fakeLlama answers like llama-server: /health, whole completions with
// usage and timings, and streams of five events 100 ms apart whose last
// carries usage. GENERATION_FAKE=crash prints a load error and exits 1;
// =exit exits 300 ms after it is healthy. A stream whose client leaves
// writes GENERATION_FAKE_CANCELLED.
func fakeLlama(args []string) {
	fs := flag.NewFlagSet("llama-server", flag.ContinueOnError)
	port := fs.String("port", "", "")
	fs.String("m", "", "")
	fs.String("host", "", "")
	fs.String("parallel", "", "")
	fs.String("c", "", "")
	fs.String("t", "", "")
	fs.String("n-gpu-layers", "", "")
	fs.String("alias", "", "")
	fs.Bool("no-webui", false, "")
	embeddings := fs.Bool("embeddings", false, "")
	fs.String("pooling", "", "")
	fs.String("b", "", "")
	fs.String("ub", "", "")
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	if f := os.Getenv("GENERATION_FAKE_ARGS"); f != "" {
		os.WriteFile(f, []byte(strings.Join(args, " ")), 0o644)
	}
	switch os.Getenv("GENERATION_FAKE") {
	case "crash":
		fmt.Fprintln(os.Stderr, "llama_model_load: error loading model: tensor 'output.weight' is corrupted")
		os.Exit(1)
	case "exit":
		go func() { time.Sleep(300 * time.Millisecond); os.Exit(3) }()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"status":"ok"}`) })
	mux.HandleFunc("POST /v1/embeddings", func(w http.ResponseWriter, _ *http.Request) {
		if !*embeddings {
			http.Error(w, "started without --embeddings", http.StatusNotImplemented)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[{"embedding":[0.6,0.8],"index":0}],"usage":{"prompt_tokens":2,"total_tokens":2}}`)
	})
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "the credential reached llama-server", 500)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"choices":[{"text":"abcd"}],"usage":{"prompt_tokens":3,"completion_tokens":4},"timings":{"prompt_ms":12}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			ev := `{"choices":[{"text":"t"}]}`
			if i == 4 {
				ev = `{"choices":[{"text":""}],"usage":{"prompt_tokens":3,"completion_tokens":5}}`
			}
			fmt.Fprintf(w, "data: %s\n\n", ev)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				os.WriteFile(os.Getenv("GENERATION_FAKE_CANCELLED"), []byte("cancelled"), 0o644)
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		io.WriteString(w, "data: [DONE]\n\n")
		if os.Getenv("GENERATION_FAKE") == "close-after-stream" {
			// as llama-server does: the connection closes after a streamed
			// answer, though the answer said nothing of it, a moment after
			// its last chunk (a client that sends its next request at once
			// on it reads EOF)
			w.(http.Flusher).Flush()
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			buf.WriteString("0\r\n\r\n")
			buf.Flush()
			time.Sleep(100 * time.Millisecond)
			conn.Close()
		}
	})
	srv := &http.Server{Addr: "127.0.0.1:" + *port, Handler: mux}
	srv.ListenAndServe()
}

func modelDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ModelFile), ggufgen.TinyLlama(1).Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func embeddingModelDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ModelFile), ggufgen.TinyLlamaEmbedding(1).Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func start(t *testing.T, mode string) (*Replica, *Metrics, error) {
	t.Helper()
	t.Setenv("GENERATION_FAKE", mode)
	t.Setenv("GENERATION_FAKE_CANCELLED", filepath.Join(t.TempDir(), "cancelled"))
	cfg := DefaultConfig()
	cfg.Name, cfg.Server, cfg.StartTimeout, cfg.DrainTimeout = "tiny", os.Args[0], 10*time.Second, 5*time.Second
	m := NewMetrics(prometheus.NewRegistry())
	r, err := Start(context.Background(), cfg, modelDir(t), slog.New(slog.DiscardHandler), m)
	if err == nil {
		t.Cleanup(r.kill)
	}
	return r, m, err
}

// llama-server closes its connection after a streamed answer without
// saying so (its answers carry "Keep-Alive: timeout=5, max=100"): a request
// sent at once on that connection read EOF, and the role answered 502
// runtime_unavailable. Against the real llama-server (1:0.7.0+dfsg-2) a
// stream then a chat on one kept-alive client failed 65 of 600 requests;
// TestImageServesTinyLlama failed on it in a fresh-clone CI run. The role
// opens a connection per request to its child now.
func TestRequestAfterAStream(t *testing.T) {
	r, _, err := start(t, "close-after-stream")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	for i := range 3 {
		for _, body := range []string{`{"prompt":"x","stream":true}`, `{"prompt":"x"}`} {
			resp, err := http.Post(srv.URL+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("round %d, %s: %d %s", i, body, resp.StatusCode, b)
			}
		}
	}
}

// The child gets the slots, the context of all of them and the layers to
// offload as the scheduler set them (--generation.gpulayers on a GPU
// deployment; 0, the CPU, otherwise).
func TestChildArgs(t *testing.T) {
	for _, tt := range []struct {
		layers int
		want   string
	}{{0, "--n-gpu-layers 0"}, {999, "--n-gpu-layers 999"}, {-5, "--n-gpu-layers 0"}} {
		t.Setenv("GENERATION_FAKE", "ok")
		args := filepath.Join(t.TempDir(), "args")
		t.Setenv("GENERATION_FAKE_ARGS", args)
		cfg := DefaultConfig()
		cfg.Name, cfg.Server, cfg.StartTimeout, cfg.DrainTimeout = "tiny", os.Args[0], 10*time.Second, 5*time.Second
		cfg.Parallel, cfg.Context, cfg.Threads, cfg.GPULayers = 2, 64, 1, tt.layers
		r, err := Start(context.Background(), cfg, modelDir(t), slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		r.kill()
		got, _ := os.ReadFile(args)
		for _, w := range []string{tt.want, "--parallel 2", "-c 128", "-t 1"} {
			if !strings.Contains(string(got), w) {
				t.Errorf("gpu layers %d: the child got %q, want %q in it", tt.layers, got, w)
			}
		}
	}
}

func TestRelayWholeAndStreamed(t *testing.T) {
	r, m, err := start(t, "ok")
	if err != nil {
		t.Fatal(err)
	}
	r.SetCallCredential("cred")
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	post := func(ctx context.Context, body, cred string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/completions", strings.NewReader(body))
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		return http.DefaultClient.Do(req)
	}
	for _, cred := range []string{"", "wrong"} {
		resp, err := post(context.Background(), `{"prompt":"x"}`, cred)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("credential %q: %d, want 401", cred, resp.StatusCode)
		}
	}
	resp, err := post(context.Background(), `{"prompt":"x"}`, "cred")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "abcd") {
		t.Fatalf("whole answer: %d %s", resp.StatusCode, b)
	}
	if p, c := testutil.ToFloat64(m.tokens.WithLabelValues("tiny", "prompt")), testutil.ToFloat64(m.tokens.WithLabelValues("tiny", "completion")); p != 3 || c != 4 {
		t.Errorf("tokens after a whole answer: prompt %v completion %v, want 3 and 4", p, c)
	}

	// streamed: the first event arrives long before the stream ends
	began := time.Now()
	resp, err = post(context.Background(), `{"prompt":"x","stream":true}`, "cred")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	var firstAt time.Duration
	events := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			if events == 0 {
				firstAt = time.Since(began)
			}
			events++
		}
	}
	resp.Body.Close()
	total := time.Since(began)
	if events != 6 || firstAt > 250*time.Millisecond || total < 400*time.Millisecond {
		t.Errorf("stream: %d events (want 6), first after %v (want < 250 ms), all after %v (want ≥ 400 ms): not relayed as they came", events, firstAt, total)
	}
	if c := testutil.ToFloat64(m.tokens.WithLabelValues("tiny", "completion")); c != 9 {
		t.Errorf("completion tokens %v after the stream, want 4 + 5", c)
	}
	if n := testutil.CollectAndCount(m.ttft); n != 1 {
		t.Errorf("%d time-to-first-token series", n)
	}

	// a client that leaves mid-stream cancels the generation on the child
	ctx, cancel := context.WithCancel(context.Background())
	resp, err = post(ctx, `{"prompt":"x","stream":true}`, "cred")
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := os.Stat(os.Getenv("GENERATION_FAKE_CANCELLED")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child kept generating after the client left")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// /v1/models names this model
	req, _ := http.NewRequest("GET", srv.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer cred")
	mr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(mr.Body)
	mr.Body.Close()
	if !strings.Contains(string(b), `"id":"tiny"`) {
		t.Errorf("/v1/models: %s", b)
	}

	// drain: no new requests, the one in flight finishes, then the child stops
	resp, err = post(context.Background(), `{"prompt":"x","stream":true}`, "cred")
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { r.Drain(); close(drained) }()
	time.Sleep(50 * time.Millisecond)
	if rr, _ := http.Get(srv.URL + "/v2/health/ready"); rr == nil || rr.StatusCode != 503 {
		t.Errorf("ready during a drain: %v", rr)
	}
	if late, err := post(context.Background(), `{"prompt":"x"}`, "cred"); err != nil || late.StatusCode != 503 {
		t.Errorf("a request during the drain: %v %v, want 503", late, err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "[DONE]") {
		t.Errorf("the stream in flight did not finish during the drain: %s", b)
	}
	select {
	case <-drained:
	case <-time.After(15 * time.Second):
		t.Fatal("drain did not end")
	}
	select {
	case <-r.Exited():
	default:
		t.Error("the child still runs after the drain")
	}
}

func TestChildExitIsNotLive(t *testing.T) {
	r, _, err := start(t, "exit")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	select {
	case <-r.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the child's exit was not seen")
	}
	for _, p := range []string{"/v2/health/live", "/v2/health/ready"} {
		if resp, err := http.Get(srv.URL + p); err != nil || resp.StatusCode != 503 {
			t.Errorf("%s after the child exited: %v %v", p, resp, err)
		}
	}
	if r.Err() == nil {
		t.Error("no exit status")
	}
}

func TestStartFailsWithTheChildsWords(t *testing.T) {
	_, _, err := start(t, "crash")
	if err == nil || !strings.Contains(err.Error(), "tensor 'output.weight' is corrupted") {
		t.Errorf("start of a crashing child: %v, want its log's last words", err)
	}
}

func TestStartRefusesANonGGUFModel(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ModelFile), []byte("not a model"), 0o644)
	t.Setenv("GENERATION_FAKE", "ok")
	cfg := DefaultConfig()
	cfg.Name, cfg.Server = "bad", os.Args[0]
	_, err := Start(context.Background(), cfg, dir, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err == nil || !strings.Contains(err.Error(), "not a GGUF") {
		t.Errorf("got %v, want the GGUF check's refusal", err)
	}
	var none *os.PathError
	_ = errors.As(err, &none)
}
