package llamaimage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck"
	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// TestImageServesTinyLlama runs the image built by `make llama-image`, its
// `nlpswarm generate` role in front of llama-server,
// (LLAMA_IMAGE, set by `make test-llama`, which `make test` runs after the
// package tests); a plain `go test ./...` skips it.
func TestImageServesTinyLlama(t *testing.T) {
	image := os.Getenv("LLAMA_IMAGE")
	if image == "" {
		t.Skip("LLAMA_IMAGE unset (make test-llama builds the image and sets it)")
	}
	ref, gguf := loadReference(t)
	dir := t.TempDir()
	model := filepath.Join(dir, "model.gguf")
	if err := os.WriteFile(model, gguf, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := ggufcheck.Check(model, ggufcheck.DefaultLimits)
	if err != nil {
		t.Fatalf("the backoffice's check refuses the model llama.cpp is given: %v", err)
	}

	const cred = "call-credential-of-tiny"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := runRole(ctx, t, image, gguf, cred)

	type usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	}
	post := func(path, body, token string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return http.DefaultClient.Do(req)
	}
	if resp, err := post("/v1/completions", `{"prompt":"x","max_tokens":1}`, ""); err != nil || resp.StatusCode != 401 {
		t.Fatalf("without the call credential: %v %v, want 401", resp, err)
	}
	complete := func(body string) (text string, u usage) {
		t.Helper()
		resp, err := post("/v1/completions", body, cred)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a struct {
			Choices []struct{ Text string } `json:"choices"`
			Usage   usage                   `json:"usage"`
		}
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || json.Unmarshal(raw, &a) != nil || len(a.Choices) != 1 {
			t.Fatalf("completion: %d %s", resp.StatusCode, raw)
		}
		return a.Choices[0].Text, a.Usage
	}
	greedy := `{"prompt":"hello world","max_tokens":8,"temperature":0}`
	first, u := complete(greedy)
	if again, _ := complete(greedy); again != first {
		t.Errorf("temperature 0 is not deterministic: %q then %q", first, again)
	}
	if u.CompletionTokens != 8 || u.PromptTokens == 0 {
		t.Errorf("usage %+v, want 8 completion tokens and the prompt's", u)
	}
	seeded := `{"prompt":"hello","max_tokens":6,"temperature":1.0,"seed":42}`
	if a, b := func() string { s, _ := complete(seeded); return s }(), func() string { s, _ := complete(seeded); return s }(); a != b {
		t.Errorf("the same seed gave %q then %q", a, b)
	}

	// streamed: events as they come, ending with [DONE]; the text is the
	// greedy one
	resp, err := post("/v1/completions", `{"prompt":"hello world","max_tokens":8,"temperature":0,"stream":true}`, cred)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("stream Content-Type %q", ct)
	}
	var streamed strings.Builder
	events, done := 0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var ev struct {
			Choices []struct{ Text string } `json:"choices"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		events++
		for _, c := range ev.Choices {
			streamed.WriteString(c.Text)
		}
	}
	if !done || events < 8 || streamed.String() != first {
		t.Errorf("stream: %d events, done %v, text %q; want ≥ 8 events, [DONE], %q", events, done, streamed.String(), first)
	}

	// chat, through the model's own template
	chat, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": "hello"}}, "max_tokens": 4, "temperature": 0})
	cr, err := post("/v1/chat/completions", string(chat), cred)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(cr.Body)
	cr.Body.Close()
	if cr.StatusCode != 200 || !bytes.Contains(raw, []byte(`"role":"assistant"`)) {
		t.Errorf("chat: %d %s", cr.StatusCode, raw)
	}

	// the official OpenAI Go SDK, unmodified, against the role: the same
	// greedy text, streamed and not, and the model list
	client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey(cred), option.WithMaxRetries(0))
	params := openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello world")},
		MaxTokens: openai.Int(8), Temperature: openai.Float(0)}
	sdk, err := client.Completions.New(ctx, params)
	if err != nil || len(sdk.Choices) != 1 || sdk.Choices[0].Text != first || sdk.Usage.CompletionTokens != 8 {
		t.Errorf("SDK completion: %v %+v, want %q in 8 tokens", err, sdk, first)
	}
	st := client.Completions.NewStreaming(ctx, params)
	var sdkStreamed strings.Builder
	for st.Next() {
		for _, c := range st.Current().Choices {
			sdkStreamed.WriteString(c.Text)
		}
	}
	if err := st.Err(); err != nil || sdkStreamed.String() != first {
		t.Errorf("SDK stream: %v %q, want %q", err, sdkStreamed.String(), first)
	}
	sdkChat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(4), Temperature: openai.Float(0)})
	if err != nil || len(sdkChat.Choices) != 1 || sdkChat.Choices[0].Message.Role != "assistant" {
		t.Errorf("SDK chat: %v %+v", err, sdkChat)
	}
	page, err := client.Models.List(ctx)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "tiny" {
		t.Errorf("SDK models: %v %+v", err, page)
	}
	wrong := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	if _, err := wrong.Completions.New(ctx, params); err == nil {
		t.Error("SDK with a wrong key: no error")
	}

	// the role's metrics count the tokens the answers reported
	mr, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mr.Body)
	mr.Body.Close()
	for _, want := range []string{`nlpswarm_generation_tokens_total{kind="completion",model="tiny"} `, `nlpswarm_generation_tokens_total{kind="prompt",model="tiny"} `,
		`nlpswarm_generation_time_to_first_token_seconds_count{model="tiny"} `, `nlpswarm_runtime_coldstart_phase_seconds_count{phase="load"} 1`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// its artifact cache is the replicas' user's (a fresh node volume)
	cacheOwnedByNobody(t, exportImage(ctx, t, image))

	// no shell in the image
	if out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true").CombinedOutput(); err == nil {
		t.Errorf("the image runs /bin/sh: %s", out)
	}
	t.Logf("tiny llama: %d parameters, %s; replica estimate at 256 positions × 2 slots: %s", info.Parameters, info.FileType, mib(info.MemoryBytes(256, 2)))

	// issue 15's correctness: transformers' greedy answers on the same
	// weights, token for token (parity_test.go)
	t.Run("TransformersParity", func(t *testing.T) { checkParity(t, role{t, base, cred}, ref) })

	// the same weights as an embedding GGUF (mean pooling in the header),
	// the role in embeddings mode: transformers' pooled vectors
	t.Run("Embeddings", func(t *testing.T) {
		base := runRole(ctx, t, image, ggufgen.TinyLlamaEmbedding(ref.Seed).Build(), cred, "--generation.embeddings")
		checkEmbeddings(t, role{t, base, cred}, ref, ggufgen.TinyHidden)
	})
}

// runRole runs the image's generate role on the model (2 slots of 256
// positions, one thread, unless extra sets --generation.parallel) with extra flags, and returns its base URL once
// it is ready; the container goes when t ends.
func runRole(ctx context.Context, t *testing.T, image string, gguf []byte, cred string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.gguf"), gguf, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	args := []string{"run", "-d", "--rm", "--read-only", "--network", "bridge",
		"-p", "127.0.0.1::8080", "-v", dir + ":/model:ro", image,
		"generate", "--modeldir", "/model", "--generation.name", "tiny", "--callcredential", cred}
	if !slices.Contains(extra, "--generation.parallel") { // the benchmark sizes its own
		args = append(args, "--generation.parallel", "2", "--generation.context", "256", "--generation.threads", "1")
	}
	args = append(args, extra...)
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v: %s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("docker", "logs", "--tail", "30", id).CombinedOutput()
			t.Logf("llama-server's log:\n%s", logs)
		}
		exec.Command("docker", "kill", id).Run()
	})
	port, err := exec.CommandContext(ctx, "docker", "port", id, "8080/tcp").Output()
	if err != nil {
		t.Fatalf("docker port: %v", err)
	}
	base := "http://" + strings.TrimSpace(strings.Split(string(port), "\n")[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "logs", "--tail", "30", id).CombinedOutput()
			t.Fatalf("the generate role not ready after 60 s: %v\n%s", err, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mib(n uint64, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
