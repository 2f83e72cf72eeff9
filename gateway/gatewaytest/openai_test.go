package gatewaytest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest"
	"github.com/nlpswarm/nlpswarm/gateway/gatewaytest/fakellama"
)

// The official OpenAI Go SDK, unmodified, drives the gateway's
// OpenAI-compatible routes with an API key as its key: whole answers,
// streams (with and without the usage event), embeddings, the model list,
// a stream that fails in the middle, and a wrong key.
func TestOpenAISDK(t *testing.T) {
	env := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	client := openai.NewClient(option.WithBaseURL(env.URL+"/v1/"), option.WithAPIKey(env.Key), option.WithMaxRetries(0))
	want := strings.Repeat("tok ", 5)

	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: gatewaytest.Gen,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(5)})
	if err != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Content != want || chat.Usage.PromptTokens != fakellama.PromptTokens {
		t.Fatalf("chat: %v %+v", err, chat)
	}

	// a stream, accumulated as the SDK does
	st := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: gatewaytest.Gen,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}})
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	for st.Next() {
		c := st.Current()
		acc.AddChunk(c)
		if len(c.Choices) == 0 {
			t.Errorf("a chunk without choices (the usage event) reached a client that did not ask for it: %+v", c)
		}
		chunks++
	}
	if err := st.Err(); err != nil || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != "tok0 tok1 tok2 tok3 tok4 " || chunks != 6 {
		t.Fatalf("chat stream: %v %d chunks %+v", err, chunks, acc.Choices)
	}

	// with the usage event asked for
	cs := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: gatewaytest.Gen,
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var text strings.Builder
	var usage openai.CompletionUsage
	for cs.Next() {
		for _, c := range cs.Current().Choices {
			text.WriteString(c.Text)
		}
		if u := cs.Current().Usage; u.TotalTokens > 0 {
			usage = u
		}
	}
	if err := cs.Err(); err != nil || text.String() != "tok0 tok1 tok2 tok3 tok4 " || usage.CompletionTokens != 5 || usage.PromptTokens != fakellama.PromptTokens {
		t.Fatalf("completion stream: %v %q %+v", err, text.String(), usage)
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: gatewaytest.Gen,
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("abc")}})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 3 {
		t.Fatalf("embeddings: %v %+v", err, emb)
	}

	page, err := client.Models.List(ctx)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != gatewaytest.Gen {
		t.Fatalf("models: %v %+v", err, page)
	}

	// the replica failing mid-stream: the SDK sees the error event
	env.Llama.FailAfter.Store(2)
	st = client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: gatewaytest.Gen,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}})
	n := 0
	for st.Next() {
		n++
	}
	var se *ssestream.StreamError
	if err := st.Err(); !errors.As(err, &se) || !strings.Contains(se.Message, "upstream_error") || n != 2 {
		t.Fatalf("mid-stream failure: %d chunks, %v", n, err)
	}
	env.Llama.FailAfter.Store(0)

	// errors before the answer are OpenAI-shaped enough for the SDK
	wrong := openai.NewClient(option.WithBaseURL(env.URL+"/v1/"), option.WithAPIKey("nope"), option.WithMaxRetries(0))
	_, err = wrong.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: gatewaytest.Gen,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}})
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != 401 || ae.Code != "unauthorized" {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nope",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}})
	if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Code != "model_not_found" {
		t.Fatalf("unknown model: %v", err)
	}
}
