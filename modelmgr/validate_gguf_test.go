package modelmgr

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

// A text-generation archive holds one GGUF model: validation reads its
// header (never the weights), records it with the memory estimate, runs no
// encoder smoke inference, and refuses a broken or missing GGUF with the
// check's reasons.
func TestValidateTextGeneration(t *testing.T) {
	smoked := false
	v := Validator{Extract: Extract, Smoke: func(context.Context, string, string) error { smoked = true; return nil }}
	good := ggufgen.TinyLlama(1).Build()
	md, err := v.Validate(context.Background(), tarGz(t, map[string][]byte{"model.gguf": good}), t.TempDir(), TextGeneration)
	if err != nil {
		t.Fatal(err)
	}
	if md.GGUF == nil || md.GGUF.Architecture != "llama" || md.GGUF.ContextLength != ggufgen.TinyContext || !md.GGUF.ChatTemplate {
		t.Errorf("header not recorded: %+v", md.GGUF)
	}
	want, _ := md.GGUF.MemoryBytes(0, generationSlots)
	if md.MemoryEstimate != int64(want) || md.MemoryEstimate <= int64(md.GGUF.TensorBytes) {
		t.Errorf("estimate %d, want %d (weights %d + KV cache + margin)", md.MemoryEstimate, want, md.GGUF.TensorBytes)
	}
	if md.MaxPositions != ggufgen.TinyContext || md.ModelType != "llama" || smoked {
		t.Errorf("positions %d, type %q, smoke run %v", md.MaxPositions, md.ModelType, smoked)
	}

	for _, c := range []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"no GGUF", map[string][]byte{"model.onnx": []byte("x"), "config.json": []byte("{}")}, "missing required file model.gguf"},
		{"truncated GGUF", map[string][]byte{"model.gguf": good[:len(good)/3]}, "model.gguf: "},
		{"an ONNX file named model.gguf", map[string][]byte{"model.gguf": []byte("\x08\x07\x12\x04onnx and more")}, "not a GGUF"},
		{"no architecture", map[string][]byte{"model.gguf": ggufgen.TinyLlama(1).Set("general.architecture", nil).Build()}, "general.architecture"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Validate(context.Background(), tarGz(t, c.files), t.TempDir(), TextGeneration)
			var ve *ValidationError
			if !errors.As(err, &ve) || !strings.Contains(strings.Join(ve.Reasons, "; "), c.want) {
				t.Errorf("got %v, want a refusal naming %q", err, c.want)
			}
		})
	}
}

// An embedding GGUF (task feature-extraction) is checked like a generation
// model and must pool its tokens into one vector; an encoder's ONNX archive
// of the same task still goes the ONNX way.
func TestValidateEmbeddingGGUF(t *testing.T) {
	smoked := false
	v := Validator{Extract: Extract, Smoke: func(context.Context, string, string) error { smoked = true; return nil }}
	md, err := v.Validate(context.Background(), tarGz(t, map[string][]byte{"model.gguf": ggufgen.TinyLlamaEmbedding(1).Build()}), t.TempDir(), FeatureExtraction)
	if err != nil {
		t.Fatal(err)
	}
	if md.GGUF == nil || md.GGUF.PoolingType != "mean" || !md.GGUF.Embeds() || md.MemoryEstimate <= 0 || smoked {
		t.Errorf("header %+v, estimate %d, smoke run %v", md.GGUF, md.MemoryEstimate, smoked)
	}
	for _, c := range []struct {
		name string
		gguf []byte
		want string
	}{
		{"no pooling", ggufgen.TinyLlama(1).Build(), "it has no llama.pooling_type"},
		{"pooling none", ggufgen.TinyLlama(1).Set("llama.pooling_type", uint32(0)).Build(), "it has pooling none"},
		{"rank is a score", ggufgen.TinyLlama(1).Set("llama.pooling_type", uint32(4)).Build(), "it has pooling rank"},
		{"unknown pooling", ggufgen.TinyLlama(1).Set("llama.pooling_type", uint32(7)).Build(), "not one of llama.cpp's pooling types"},
		{"pooling as text", ggufgen.TinyLlama(1).Set("llama.pooling_type", "mean").Build(), `"llama.pooling_type"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Validate(context.Background(), tarGz(t, map[string][]byte{"model.gguf": c.gguf}), t.TempDir(), FeatureExtraction)
			var ve *ValidationError
			if !errors.As(err, &ve) || !strings.Contains(strings.Join(ve.Reasons, "; "), c.want) {
				t.Errorf("got %v, want a refusal naming %q", err, c.want)
			}
		})
	}
}

func TestArchiveFormat(t *testing.T) {
	for _, c := range []struct {
		task  string
		files []string
		want  string
	}{
		{TextGeneration, []string{"model.gguf"}, FormatGGUF},
		{TextGeneration, []string{"model.onnx"}, FormatGGUF}, // refused later: no model.gguf
		{FeatureExtraction, []string{"model.gguf"}, FormatGGUF},
		{FeatureExtraction, []string{"README.md", "model.gguf"}, FormatGGUF},
		{FeatureExtraction, []string{"config.json", "model.gguf", "model.onnx", "tokenizer.json"}, FormatONNX},
		{FeatureExtraction, []string{"config.json", "model.onnx", "tokenizer.json"}, FormatONNX},
		{"text-classification", []string{"model.gguf"}, FormatONNX},
		{"token-classification", nil, FormatONNX},
	} {
		if got := ArchiveFormat(c.task, c.files); got != c.want {
			t.Errorf("ArchiveFormat(%s, %v) = %s, want %s", c.task, c.files, got, c.want)
		}
	}
}
