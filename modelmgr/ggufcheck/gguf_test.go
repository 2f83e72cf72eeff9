package ggufcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kv is one metadata entry a test file declares; value is a string,
// uint32, uint64, float32, bool, []string or []int32.
type kv struct {
	key   string
	value any
}

// tensor is one tensor info; data is written zeroed.
type tensor struct {
	name   string
	dims   []uint64
	typ    uint32 // ggml type: 0 F32, 1 F16
	offset uint64 // relative to the tensor data; set by build when auto
}

// file builds a GGUF v3 file: header, metadata, tensor infos, padding to
// 32, then data for every tensor (F32 4 bytes, F16 2 bytes an element).
type file struct {
	version  uint32
	kvs      []kv
	tensors  []tensor
	dataSize int64 // 0: exactly what the tensors need
}

func (f file) bytes() []byte {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { le(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	if f.version == 0 {
		f.version = 3
	}
	le(f.version)
	le(uint64(len(f.tensors)))
	le(uint64(len(f.kvs)))
	for _, e := range f.kvs {
		str(e.key)
		switch v := e.value.(type) {
		case string:
			le(uint32(8))
			str(v)
		case uint32:
			le(uint32(4))
			le(v)
		case uint64:
			le(uint32(10))
			le(v)
		case float32:
			le(uint32(6))
			le(v)
		case bool:
			le(uint32(7))
			le(v)
		case []string:
			le(uint32(9))
			le(uint32(8))
			le(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []int32:
			le(uint32(9))
			le(uint32(5))
			le(uint64(len(v)))
			for _, x := range v {
				le(x)
			}
		default:
			panic("test file: unknown value type")
		}
	}
	var data uint64
	for _, t := range f.tensors {
		str(t.name)
		le(uint32(len(t.dims)))
		for _, d := range t.dims {
			le(d)
		}
		le(t.typ)
		le(t.offset)
		if end := t.offset + t.bytes(); end < 1<<24 { // a test's offset past the file stays past it
			data = max(data, (end+31)/32*32)
		}
	}
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	n := int64(data)
	if f.dataSize > 0 {
		n = f.dataSize
	}
	b.Write(make([]byte, n))
	return b.Bytes()
}

func (t tensor) bytes() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	if t.typ == 1 {
		return n * 2
	}
	return n * 4
}

// tiny is a llama-architecture model: 2 layers, hidden 64, 4 heads of 16,
// 2 KV heads, a vocabulary of 8, context 256, F32 weights.
func tiny() file {
	vocab := []string{"<s>", "</s>", "a", "b", "c", "d", "e", "f"}
	f := file{kvs: []kv{
		{"general.architecture", "llama"},
		{"general.name", "tiny"},
		{"general.file_type", uint32(0)},
		{"llama.context_length", uint32(256)},
		{"llama.embedding_length", uint32(64)},
		{"llama.block_count", uint32(2)},
		{"llama.feed_forward_length", uint32(128)},
		{"llama.attention.head_count", uint32(4)},
		{"llama.attention.head_count_kv", uint32(2)},
		{"llama.rope.dimension_count", uint32(16)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", vocab},
		{"tokenizer.ggml.token_type", []int32{3, 3, 1, 1, 1, 1, 1, 1}},
		{"tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"},
	}}
	add := func(name string, dims ...uint64) {
		off := uint64(0)
		if n := len(f.tensors); n > 0 {
			last := f.tensors[n-1]
			off = (last.offset + last.bytes() + 31) / 32 * 32
		}
		f.tensors = append(f.tensors, tensor{name: name, dims: dims, offset: off})
	}
	add("token_embd.weight", 64, 8)
	for l := range 2 {
		p := "blk." + string(rune('0'+l)) + "."
		add(p+"attn_norm.weight", 64)
		add(p+"attn_q.weight", 64, 64)
		add(p+"attn_k.weight", 64, 32)
		add(p+"attn_v.weight", 64, 32)
		add(p+"attn_output.weight", 64, 64)
		add(p+"ffn_norm.weight", 64)
		add(p+"ffn_gate.weight", 64, 128)
		add(p+"ffn_up.weight", 64, 128)
		add(p+"ffn_down.weight", 128, 64)
	}
	add("output_norm.weight", 64)
	add("output.weight", 64, 8)
	return f
}

func write(t testing.TB, b []byte) string {
	p := filepath.Join(t.TempDir(), "model.gguf")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckSummarises(t *testing.T) {
	f := tiny()
	info, err := Check(write(t, f.bytes()), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var params, size uint64
	for _, ts := range f.tensors {
		params += ts.bytes() / 4
		size += ts.bytes()
	}
	want := Info{Architecture: "llama", Name: "tiny", FileType: "F32", Parameters: params, TensorBytes: size, Tensors: len(f.tensors),
		ContextLength: 256, EmbeddingLength: 64, Layers: 2, HeadCount: 4, HeadCountKV: 2, KeyLength: 16, ValueLength: 16,
		VocabSize: 8, Tokenizer: "llama", ChatTemplate: true}
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
	set := func(f file, key string, v any) file {
		kvs := []kv{}
		found := false
		for _, e := range f.kvs {
			if e.key == key {
				found = true
				if v == nil {
					continue
				}
				e.value = v
			}
			kvs = append(kvs, e)
		}
		if !found && v != nil {
			kvs = append(kvs, kv{key, v})
		}
		f.kvs = kvs
		return f
	}
	past := tiny()
	past.tensors[3].offset = 1 << 40
	unaligned := tiny()
	unaligned.tensors[1].offset += 4
	short := tiny()
	short.dataSize = 1024
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter than"},
		{"ONNX", []byte("\x08\x07\x12\x04onnx and more bytes"), "not a GGUF"},
		{"version 1", func() []byte { f := tiny(); f.version = 1; return f.bytes() }(), "version 1"},
		{"truncated header", tiny().bytes()[:200], "malformed header"},
		{"no architecture", set(tiny(), "general.architecture", nil).bytes(), "general.architecture"},
		{"architecture not a string", set(tiny(), "general.architecture", uint32(7)).bytes(), "general.architecture"},
		{"an adapter", set(tiny(), "general.type", "adapter").bytes(), "general.type"},
		{"no context length", set(tiny(), "llama.context_length", nil).bytes(), "context_length"},
		{"a context of 2^32", set(tiny(), "llama.context_length", uint64(1<<32)).bytes(), "context of"},
		{"no vocabulary", set(set(tiny(), "tokenizer.ggml.tokens", nil), "tokenizer.ggml.token_type", nil).bytes(), "tokenizer"},
		{"tensor past the file", past.bytes(), "past the"},
		{"tensor off alignment", unaligned.bytes(), "alignment"},
		{"data shorter than the tensors", short.bytes(), "tensor data"},
		{"alignment of 3", set(tiny(), "general.alignment", uint32(3)).bytes(), "alignment"},
		{"file type a string", set(tiny(), "general.file_type", "Q4").bytes(), "file_type"},
		{"no tensors", func() []byte { f := tiny(); f.tensors = nil; return f.bytes() }(), "no tensors"},
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
	if _, err := Check(write(t, tiny().bytes()), lim); err == nil || !strings.Contains(err.Error(), "tensors, at most 3") {
		t.Errorf("tensor limit: %v", err)
	}
	lim = DefaultLimits
	lim.MaxHeaderSize = 64
	if _, err := Check(write(t, tiny().bytes()), lim); err == nil || !strings.Contains(err.Error(), "header of") {
		t.Errorf("header limit: %v", err)
	}
}
