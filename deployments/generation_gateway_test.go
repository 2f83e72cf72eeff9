package deployments

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/nlpswarm/nlpswarm/deployments/images/llama/parity"
	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// checkGenerationGateway is issue 15's correctness through the whole stack
// (TestEndToEnd/Generation, once the model is deployed): every prompt of
// the parity fixture (transformers' greedy generate on the same weights)
// sent by the official OpenAI Go SDK, unmodified, to the gateway with a
// customer key gets transformers' answer, word for word, streamed and not;
// /v1/models lists the model; NLP Cloud's generation route answers the
// same; and the account's usage counts the tokens the answers reported.
func checkGenerationGateway(t *testing.T, model, key, admin string, ref parity.Reference) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := openai.NewClient(option.WithBaseURL(gatewayURL+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(2))

	// the first request may wait for the gateway's catalogue and discovery
	waitFor(t, time.Minute, func() bool {
		page, err := client.Models.List(ctx)
		return err == nil && slices.ContainsFunc(page.Data, func(m openai.Model) bool { return m.ID == model })
	})

	var prompt, completion int64
	for _, c := range ref.Cases {
		var text string
		if c.Messages == nil {
			a, err := client.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
				Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(c.Prompt)},
				MaxTokens: openai.Int(int64(c.MaxTokens)), Temperature: openai.Float(0)})
			if err != nil || len(a.Choices) != 1 {
				t.Fatalf("%s through the gateway: %v %+v", c.Name, err, a)
			}
			text = a.Choices[0].Text
			prompt, completion = prompt+a.Usage.PromptTokens, completion+a.Usage.CompletionTokens
			if a.Model != model { // not the replica's cache path of the file
				t.Errorf("%s: the answer names the model %q, want %q", c.Name, a.Model, model)
			}
		} else {
			a, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model,
				Messages: chatMessages(c.Messages), MaxTokens: openai.Int(int64(c.MaxTokens)), Temperature: openai.Float(0)})
			if err != nil || len(a.Choices) != 1 {
				t.Fatalf("%s through the gateway: %v %+v", c.Name, err, a)
			}
			text = a.Choices[0].Message.Content
			prompt, completion = prompt+a.Usage.PromptTokens, completion+a.Usage.CompletionTokens
		}
		if text != c.Text {
			t.Errorf("%s through the gateway answered %q, transformers %q", c.Name, text, c.Text)
		}
	}
	t.Logf("%d prompts through the gateway (OpenAI Go SDK): transformers' greedy answers word for word; %d prompt and %d completion tokens", len(ref.Cases), prompt, completion)

	// streamed: the same answers, as events
	for _, c := range []parity.Case{firstCase(ref, false), firstCase(ref, true)} {
		var got strings.Builder
		chunks := 0
		if c.Messages == nil {
			s := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
				Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(c.Prompt)},
				MaxTokens: openai.Int(int64(c.MaxTokens)), Temperature: openai.Float(0)})
			for s.Next() {
				for _, ch := range s.Current().Choices {
					got.WriteString(ch.Text)
				}
				chunks++
			}
			if err := s.Err(); err != nil {
				t.Fatalf("%s streamed: %v", c.Name, err)
			}
		} else {
			s := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: model,
				Messages: chatMessages(c.Messages), MaxTokens: openai.Int(int64(c.MaxTokens)), Temperature: openai.Float(0)})
			for s.Next() {
				for _, ch := range s.Current().Choices {
					got.WriteString(ch.Delta.Content)
				}
				chunks++
			}
			if err := s.Err(); err != nil {
				t.Fatalf("%s streamed: %v", c.Name, err)
			}
		}
		if got.String() != c.Text || chunks < c.MaxTokens/2 {
			t.Errorf("%s streamed through the gateway: %q in %d events, want %q in about one event per token", c.Name, got.String(), chunks, c.Text)
		}
	}

	// NLP Cloud's shape: the same continuation
	c := firstCase(ref, false)
	body, _ := json.Marshal(map[string]any{"text": c.Prompt, "max_length": c.MaxTokens, "temperature": 0, "remove_input": true})
	var gen struct {
		GeneratedText string `json:"generated_text"`
	}
	if code, raw := postJSON(t, gatewayURL+"/v1/"+model+"/generation", "Token "+key, body, &gen); code != 200 || gen.GeneratedText != c.Text {
		t.Errorf("POST /v1/%s/generation: %d %s, want %q", model, code, raw, c.Text)
	}

	// usage: the tokens the answers reported, on the model's row (the
	// gateway flushes usage every few seconds)
	var u struct {
		Usage []struct {
			Model        string `json:"model"`
			InputTokens  int64  `json:"input_tokens"`
			OutputTokens int64  `json:"output_tokens"`
		} `json:"usage"`
	}
	var in, out int64
	waitFor(t, time.Minute, func() bool {
		in, out = 0, 0
		if !getJSON(backoffice+"/api/v1/usage?model="+model, admin, &u) {
			return false
		}
		for _, r := range u.Usage {
			in, out = in+r.InputTokens, out+r.OutputTokens
		}
		return in >= prompt && out >= completion
	})
	t.Logf("usage of %s: %d input and %d output tokens (the non-streamed answers alone reported %d and %d)", model, in, out, prompt, completion)
}

// gatewayURL is the customer API of the stack make up runs (its host-mode
// port on this machine).
const gatewayURL = "http://127.0.0.1:8080"

func firstCase(ref parity.Reference, chat bool) parity.Case {
	for _, c := range ref.Cases {
		if (c.Messages != nil) == chat {
			return c
		}
	}
	panic("the parity fixture has no such case")
}

func chatMessages(msgs []map[string]string) []openai.ChatCompletionMessageParamUnion {
	var out []openai.ChatCompletionMessageParamUnion
	for _, m := range msgs {
		switch m["role"] {
		case "system":
			out = append(out, openai.SystemMessage(m["content"]))
		case "assistant":
			out = append(out, openai.AssistantMessage(m["content"]))
		default:
			out = append(out, openai.UserMessage(m["content"]))
		}
	}
	return out
}

func postJSON(t *testing.T, url, auth string, body []byte, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == 200 {
		_ = json.Unmarshal(raw, out)
	}
	return resp.StatusCode, string(raw)
}

// checkEmbeddingGGUF is issue 15's embeddings from GGUF through the whole
// stack: ggufgen's embedding twin of the parity model (mean pooling) pushed
// with task feature-extraction, deployed with no resources given (the
// generation runtime in its embeddings mode), and called with a customer
// key both ways: OpenAI's /v1/embeddings (the SDK, unmodified) and the task
// route /v1/{model}/embeddings; each vector within 1e-3 of transformers'
// mean pooling on the same weights.
func checkEmbeddingGGUF(t *testing.T, cli func(args ...string) string, key string, ref parity.Reference) {
	const model = "tinyemb"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.gguf"), ggufgen.TinyLlamaEmbedding(ref.Seed).Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	cli("models", "create", model, "--task", "feature-extraction")
	t.Log(cli("models", "push", model, dir))
	start := time.Now()
	t.Log(cli("deploy", model, "--replicas", "1", "--wait", "--timeout", "3m"))
	t.Logf("deploy %s: running after %s", model, time.Since(start).Round(10*time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := openai.NewClient(option.WithBaseURL(gatewayURL+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(2))
	near := func(got []float64, want []float64) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-3 {
				return false
			}
		}
		return true
	}
	var sdk *openai.CreateEmbeddingResponse
	waitFor(t, time.Minute, func() bool { // the catalogue and discovery catch up
		var err error
		sdk, err = client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model,
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(ref.Embeddings[0].Text)}})
		return err == nil && len(sdk.Data) == 1
	})
	if !near(sdk.Data[0].Embedding, ref.Embeddings[0].Vector) {
		t.Errorf("/v1/embeddings of %q: %v, want transformers' %v", ref.Embeddings[0].Text, sdk.Data[0].Embedding, ref.Embeddings[0].Vector)
	}
	for _, e := range ref.Embeddings {
		body, _ := json.Marshal(map[string]string{"text": e.Text})
		var got struct {
			Embeddings [][]float64 `json:"embeddings"`
		}
		if code, raw := postJSON(t, gatewayURL+"/v1/"+model+"/embeddings", "Token "+key, body, &got); code != 200 || len(got.Embeddings) != 1 || !near(got.Embeddings[0], e.Vector) {
			t.Errorf("POST /v1/%s/embeddings %q: %d %s, want transformers' vector", model, e.Text, code, raw)
		}
	}
	t.Logf("%s: %d texts through the gateway (the task route, and OpenAI's with the SDK), each within 1e-3 of transformers' mean pooling", model, len(ref.Embeddings))
	t.Log(cli("undeploy", model))
}
