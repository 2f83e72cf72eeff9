package ggufcheck

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

func tiny() ggufgen.File { return ggufgen.TinyLlama(1) }

func write(t testing.TB, b []byte) string {
	p := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckSummarises(t *testing.T) {
	f := tiny()
	info, err := Check(write(t, f.Build()), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var params, size uint64
	for _, ts := range f.Tensors {
		params += ts.Bytes() / 4
		size += ts.Bytes()
	}
	vocab, _, _ := ggufgen.TinyVocab()
	want := Info{Architecture: "llama", Name: "tiny-llama", FileType: "F32", Parameters: params, TensorBytes: size, Tensors: len(f.Tensors),
		ContextLength: ggufgen.TinyContext, EmbeddingLength: ggufgen.TinyHidden, Layers: ggufgen.TinyLayers, HeadCount: ggufgen.TinyHeads,
		HeadCountKV: ggufgen.TinyKVHeads, KeyLength: 16, ValueLength: 16, VocabSize: uint64(len(vocab)), Tokenizer: "llama", ChatTemplate: true}
	info.HeaderBytes, info.FileBytes = 0, 0
	if info != want {
		t.Errorf("got  %+v\nwant %+v", info, want)
	}
}

func TestMemoryBytes(t *testing.T) {
	// a 7B-like model: 32 layers, 8 KV heads of 128, 4 GiB of Q4 weights
	i := Info{TensorBytes: 4 << 30, ContextLength: 8192, Layers: 32, HeadCountKV: 8, KeyLength: 128, ValueLength: 128}
	kv, err := i.KVCacheBytes(4096, 4)
	if err != nil {
		t.Fatal(err)
	}
	// 32 layers × 8 heads × 256 × 2 bytes = 128 KiB a position; × 16,384
	if kv != 2<<30 {
		t.Errorf("KV cache %d, want 2 GiB", kv)
	}
	for _, c := range []struct {
		ctx, slots uint64
		want       uint64
	}{
		{4096, 4, 4<<30 + 2<<30 + (4<<30)/10},
		{0, 1, 4<<30 + 1<<30 + (4<<30)/10}, // the model's own 8192 positions
		{0, 0, 4<<30 + 1<<30 + (4<<30)/10}, // at least one slot
	} {
		got, err := i.MemoryBytes(c.ctx, c.slots)
		if err != nil || got != c.want {
			t.Errorf("MemoryBytes(%d, %d) = %d, %v; want %d", c.ctx, c.slots, got, err, c.want)
		}
	}
	small := Info{TensorBytes: 1 << 20, ContextLength: 16, Layers: 1, HeadCountKV: 1, KeyLength: 1, ValueLength: 1}
	if got, _ := small.MemoryBytes(0, 1); got != 1<<20+64+64<<20 {
		t.Errorf("a small model's margin: %d, want 64 MiB beside it", got)
	}
	huge := Info{Layers: math.MaxUint32, HeadCountKV: math.MaxUint32, KeyLength: math.MaxUint32, ValueLength: 1, ContextLength: 1 << 20}
	if _, err := huge.MemoryBytes(0, 64); !errors.Is(err, ErrTooLarge) {
		t.Errorf("overflowing estimate: %v, want ErrTooLarge", err)
	}
}

// Each hostile or broken file is refused with a reason naming what is wrong.
func TestCheckRefuses(t *testing.T) {
	set := func(f ggufgen.File, key string, v any) ggufgen.File { return f.Set(key, v) }
	past := tiny()
	past.Tensors[3].Offset = 1 << 40
	unaligned := tiny()
	unaligned.Tensors[1].Offset += 4
	short := tiny()
	short.DataSize = 1024
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter than"},
		{"ONNX", []byte("\x08\x07\x12\x04onnx and more bytes"), "not a GGUF"},
		{"version 1", func() []byte { f := tiny(); f.Version = 1; return f.Build() }(), "version 1"},
		{"truncated header", tiny().Build()[:200], "malformed header"},
		{"no architecture", set(tiny(), "general.architecture", nil).Build(), "general.architecture"},
		{"architecture not a string", set(tiny(), "general.architecture", uint32(7)).Build(), "general.architecture"},
		{"an adapter", set(tiny(), "general.type", "adapter").Build(), "general.type"},
		{"no context length", set(tiny(), "llama.context_length", nil).Build(), "context_length"},
		{"a context of 2^32", set(tiny(), "llama.context_length", uint64(1<<32)).Build(), "context of"},
		{"no vocabulary", set(set(set(tiny(), "tokenizer.ggml.tokens", nil), "tokenizer.ggml.token_type", nil), "tokenizer.ggml.scores", nil).Build(), "tokenizer"},
		{"tensor past the file", past.Build(), "past the"},
		{"tensor off alignment", unaligned.Build(), "alignment"},
		{"data shorter than the tensors", short.Build(), "tensor data"},
		{"alignment of 3", set(tiny(), "general.alignment", uint32(3)).Build(), "alignment"},
		{"file type a string", set(tiny(), "general.file_type", "Q4").Build(), "file_type"},
		{"no tensors", func() []byte { f := tiny(); f.Tensors = nil; return f.Build() }(), "no tensors"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Check(write(t, c.b), DefaultLimits)
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a refusal naming %q", err, c.want)
			}
		})
	}
	lim := DefaultLimits
	lim.MaxTensors = 3
	if _, err := Check(write(t, tiny().Build()), lim); err == nil || !strings.Contains(err.Error(), "tensors, at most 3") {
		t.Errorf("tensor limit: %v", err)
	}
	lim = DefaultLimits
	lim.MaxHeaderSize = 64
	if _, err := Check(write(t, tiny().Build()), lim); err == nil || !strings.Contains(err.Error(), "header of") {
		t.Errorf("header limit: %v", err)
	}
}

// An embedding GGUF's pooling is recorded by the name llama-server's
// --pooling takes; a value llama.cpp does not know, or of another type than
// the uint32 llama.cpp reads, is refused.
func TestPooling(t *testing.T) {
	for _, c := range []struct {
		value  any
		name   string
		embeds bool
		refuse bool
	}{
		{nil, "", false, false},
		{uint32(0), "none", false, false},
		{uint32(1), "mean", true, false},
		{uint32(2), "cls", true, false},
		{int32(2), "", false, true},
		{uint32(3), "last", true, false},
		{uint32(4), "rank", false, false},
		{uint32(5), "", false, true},
		{float32(1), "", false, true},
		{"mean", "", false, true},
	} {
		info, err := Check(write(t, tiny().Set("llama.pooling_type", c.value).Build()), DefaultLimits)
		if c.refuse {
			if err == nil || !strings.Contains(err.Error(), "pooling_type") {
				t.Errorf("pooling_type %v: %v, want a refusal", c.value, err)
			}
			continue
		}
		if err != nil || info.PoolingType != c.name || info.Embeds() != c.embeds || info.Pooling != (c.value != nil) {
			t.Errorf("pooling_type %v: %+v %v, want %q (embeds %v)", c.value, info, err, c.name, c.embeds)
		}
	}
	if info, err := Check(write(t, ggufgen.TinyLlamaEmbedding(1).Build()), DefaultLimits); err != nil || info.PoolingType != "mean" {
		t.Errorf("TinyLlamaEmbedding: %+v %v", info, err)
	}
}
