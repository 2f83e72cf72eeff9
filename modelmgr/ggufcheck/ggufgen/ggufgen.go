// Package ggufgen writes GGUF files for tests: a byte-exact builder of the
// format (version, metadata, tensor infos, alignment, data) and TinyLlama, a
// deterministic random-weight llama-architecture model small enough to
// commit nothing and generate in milliseconds, with a vocabulary of real
// words and a chat template, which llama.cpp loads and runs and which
// transformers' GGUF reader loads too (the generation runtime's image test
// compares the two, deployments/images/llama/parity); TinyLlamaEmbedding is
// its mean-pooling twin. It is a test helper: no role imports it.
package ggufgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// KV is one metadata entry. Value is a string, uint32, int32, uint64,
// float32, bool, []string, []float32 or []int32.
type KV struct {
	Key   string
	Value any
}

// Tensor is one tensor info. Type 0 is F32 (the only type Build fills with
// values); Offset is relative to the tensor data.
type Tensor struct {
	Name   string
	Dims   []uint64
	Type   uint32
	Offset uint64
}

// Bytes is the tensor's data size as F32 (4 bytes) or F16 (2 bytes) elements.
func (t Tensor) Bytes() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	if t.Type == 1 {
		return n * 2
	}
	return n * 4
}

// File is a GGUF file to write.
type File struct {
	Version  uint32 // 3 when 0
	KVs      []KV
	Tensors  []Tensor
	DataSize int64 // bytes of tensor data; 0: what the tensors need (offsets past 16 MiB ignored)
	// Fill gives a tensor's F32 values; nil writes zeros.
	Fill func(t Tensor, values []float32)
}

const alignment = 32

// Build writes f.
func (f File) Build() []byte {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { le(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	if f.Version == 0 {
		f.Version = 3
	}
	le(f.Version)
	le(uint64(len(f.Tensors)))
	le(uint64(len(f.KVs)))
	for _, e := range f.KVs {
		str(e.Key)
		switch v := e.Value.(type) {
		case string:
			le(uint32(8))
			str(v)
		case uint32:
			le(uint32(4))
			le(v)
		case int32:
			le(uint32(5))
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
		case []float32:
			le(uint32(9))
			le(uint32(6))
			le(uint64(len(v)))
			le(v)
		case []int32:
			le(uint32(9))
			le(uint32(5))
			le(uint64(len(v)))
			le(v)
		default:
			panic(fmt.Sprintf("ggufgen: value of %s: unknown type %T", e.Key, e.Value))
		}
	}
	var data uint64
	for _, t := range f.Tensors {
		str(t.Name)
		le(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			le(d)
		}
		le(t.Type)
		le(t.Offset)
		if end := t.Offset + t.Bytes(); end < 1<<24 {
			data = max(data, (end+alignment-1)/alignment*alignment)
		}
	}
	for b.Len()%alignment != 0 {
		b.WriteByte(0)
	}
	start := b.Len()
	n := int64(data)
	if f.DataSize > 0 {
		n = f.DataSize
	}
	b.Write(make([]byte, n))
	if f.Fill != nil {
		out := b.Bytes()[start:]
		for _, t := range f.Tensors {
			if t.Type != 0 || t.Offset+t.Bytes() > uint64(len(out)) {
				continue
			}
			vals := make([]float32, t.Bytes()/4)
			f.Fill(t, vals)
			for i, v := range vals {
				binary.LittleEndian.PutUint32(out[t.Offset+uint64(4*i):], math.Float32bits(v))
			}
		}
	}
	return b.Bytes()
}

// Set returns f with key set to v (appended when absent); a nil v removes it.
func (f File) Set(key string, v any) File {
	kvs := make([]KV, 0, len(f.KVs)+1)
	found := false
	for _, e := range f.KVs {
		if e.Key == key {
			found = true
			if v == nil {
				continue
			}
			e.Value = v
		}
		kvs = append(kvs, e)
	}
	if !found && v != nil {
		kvs = append(kvs, KV{key, v})
	}
	f.KVs = kvs
	return f
}

// Tiny shapes: 2 layers, hidden 64, 4 heads of 16, 2 KV heads, feed-forward
// 128, context 256.
const (
	TinyLayers  = 2
	TinyHidden  = 64
	TinyHeads   = 4
	TinyKVHeads = 2
	TinyFF      = 128
	TinyContext = 256
)

// TinyWords are the words of TinyVocab, each a whole piece ("▁the") after
// the chain of its prefixes ("▁t", "▁th"), so SentencePiece's merges and the
// BPE merges transformers rebuilds from the scores split text alike.
var TinyWords = []string{
	"the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as",
	"with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but",
	"not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each",
	"which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then",
	"them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look",
	"two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first",
	"water", "been", "call", "who", "its", "now", "find", "long", "down", "day", "did", "get", "come",
	"made", "may", "part", "hello", "world", "model", "swarm", "cat", "dog", "sat", "mat", "tell", "me",
	"story", "once", "upon", "good", "morning", "thank", "a", "i", "Hello", "The", "I", "What", "How",
}

// Chat control tokens of TinyLlama's template.
const (
	TinySystem    = "<|system|>"
	TinyUser      = "<|user|>"
	TinyAssistant = "<|assistant|>"
	TinyEnd       = "<|end|>"
)

// TinyChatTemplate is TinyLlama's tokenizer.chat_template (Jinja, as
// transformers' apply_chat_template and llama-server render it): a turn is
// <|role|>content<|end|>, and the generation prompt opens the assistant's.
const TinyChatTemplate = "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}" +
	"{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"

// TinyVocab is TinyLlama's SentencePiece vocabulary: <unk>, <s>, </s>,
// the chat control tokens, the 256 byte tokens (so any text tokenizes),
// "▁", the printable ASCII characters, then TinyWords with their prefixes.
// said reports the tokens the model may say: whole words and punctuation.
func TinyVocab() (tokens []string, scores []float32, types []int32) {
	tokens, scores, types, _ = tinyVocab()
	return tokens, scores, types
}

func tinyVocab() (tokens []string, scores []float32, types []int32, said []bool) {
	index := map[string]int{}
	add := func(tok string, typ int32, say bool) {
		if i, ok := index[tok]; ok { // a word that is also a longer one's prefix
			said[i] = said[i] || say
			return
		}
		index[tok] = len(tokens)
		tokens = append(tokens, tok)
		types = append(types, typ)
		said = append(said, say)
		if typ == 1 {
			scores = append(scores, -float32(len(tokens)))
		} else {
			scores = append(scores, 0)
		}
	}
	add("<unk>", 2, false) // unknown
	add("<s>", 3, false)   // control
	add("</s>", 3, false)
	for _, s := range []string{TinySystem, TinyUser, TinyAssistant, TinyEnd} {
		add(s, 3, false)
	}
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 6, false) // byte
	}
	add("▁", 1, false)
	for c := byte('!'); c <= '~'; c++ {
		add(string(c), 1, strings.IndexByte(".,!?", c) >= 0)
	}
	for _, w := range TinyWords {
		w = "▁" + w
		for k := len("▁") + 1; k <= len(w); k++ {
			add(w[:k], 1, k == len(w))
		}
	}
	return tokens, scores, types, said
}

// TinyOutputScale is the standard deviation of TinyLlama's output head:
// logits of about 8 standard deviations keep greedy choices far apart
// (top-1 margins well above float rounding), so llama.cpp and torch agree.
const TinyOutputScale = 1.0

// TinyLlama is a llama-architecture model with random F32 weights from
// seed (norms at 1), the vocabulary of TinyVocab and its chat template.
// Its output head is zero for every token but whole words and punctuation,
// so what it says is words (random ones), never bytes, control tokens or
// </s>: a greedy answer runs to max_tokens.
func TinyLlama(seed uint64) File {
	tokens, scores, types, said := tinyVocab()
	n := uint64(len(tokens))
	f := File{KVs: []KV{
		{"general.architecture", "llama"},
		{"general.name", "tiny-llama"},
		{"general.file_type", uint32(0)},
		{"llama.context_length", uint32(TinyContext)},
		{"llama.embedding_length", uint32(TinyHidden)},
		{"llama.block_count", uint32(TinyLayers)},
		{"llama.feed_forward_length", uint32(TinyFF)},
		{"llama.attention.head_count", uint32(TinyHeads)},
		{"llama.attention.head_count_kv", uint32(TinyKVHeads)},
		{"llama.rope.dimension_count", uint32(TinyHidden / TinyHeads)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.vocab_size", uint32(n)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
		{"tokenizer.chat_template", TinyChatTemplate},
	}}
	add := func(name string, dims ...uint64) {
		off := uint64(0)
		if k := len(f.Tensors); k > 0 {
			last := f.Tensors[k-1]
			off = (last.Offset + last.Bytes() + alignment - 1) / alignment * alignment
		}
		f.Tensors = append(f.Tensors, Tensor{Name: name, Dims: dims, Offset: off})
	}
	kv := uint64(TinyHidden / TinyHeads * TinyKVHeads)
	add("token_embd.weight", TinyHidden, n)
	for l := range TinyLayers {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", TinyHidden)
		add(p+"attn_q.weight", TinyHidden, TinyHidden)
		add(p+"attn_k.weight", TinyHidden, kv)
		add(p+"attn_v.weight", TinyHidden, kv)
		add(p+"attn_output.weight", TinyHidden, TinyHidden)
		add(p+"ffn_norm.weight", TinyHidden)
		add(p+"ffn_gate.weight", TinyHidden, TinyFF)
		add(p+"ffn_up.weight", TinyHidden, TinyFF)
		add(p+"ffn_down.weight", TinyFF, TinyHidden)
	}
	add("output_norm.weight", TinyHidden)
	add("output.weight", TinyHidden, n)
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	f.Fill = func(t Tensor, vals []float32) {
		switch {
		case len(t.Dims) == 1:
			for i := range vals {
				vals[i] = 1
			}
		case t.Name == "output.weight":
			// row v (TinyHidden values) is token v's; silent tokens stay 0
			for i := range vals {
				if v := r.NormFloat64() * TinyOutputScale; said[i/TinyHidden] {
					vals[i] = float32(v)
				}
			}
		default:
			for i := range vals {
				vals[i] = float32(r.NormFloat64() * 0.2)
			}
		}
	}
	return f
}

// TinyLlamaEmbedding is TinyLlama as an embedding model: the same weights,
// with llama.pooling_type 1 (mean over the sequence's final hidden states,
// as llama.cpp pools and sentence-transformers' mean pooling does).
func TinyLlamaEmbedding(seed uint64) File {
	return TinyLlama(seed).Set("general.name", "tiny-llama-embedding").Set("llama.pooling_type", uint32(1))
}
