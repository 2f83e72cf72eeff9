package ggufcheck

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"

	gguf "github.com/gpustack/gguf-parser-go"
)

// Limits bound what a file may declare.
type Limits struct {
	MaxTensors    int    // tensor infos in the header
	MaxMetadata   int    // metadata key/value pairs
	MaxContext    uint64 // the model's context length
	MaxHeaderSize int64  // bytes before the tensor data (metadata, vocabulary, tensor infos)
}

// DefaultLimits hold today's open models with room to spare: a 405B model
// has about 1,100 tensors, vocabularies reach 256k tokens (a few MiB of
// header), contexts 1M positions.
var DefaultLimits = Limits{MaxTensors: 65536, MaxMetadata: 4096, MaxContext: 1 << 21, MaxHeaderSize: 256 << 20}

// Info is what the backoffice records of a GGUF model.
type Info struct {
	Architecture    string `json:"architecture"`           // general.architecture: llama, qwen2, gemma3, bert…
	Name            string `json:"name,omitempty"`         // general.name
	FileType        string `json:"file_type"`              // the quantisation: F16, Q8_0, Q4_K_M…
	Parameters      uint64 `json:"parameters"`             // elements of every tensor
	TensorBytes     uint64 `json:"tensor_bytes"`           // the weights as stored
	Tensors         int    `json:"tensors"`                //
	ContextLength   uint64 `json:"context_length"`         // positions the model was trained for
	EmbeddingLength uint64 `json:"embedding_length"`       //
	Layers          uint64 `json:"layers"`                 // block_count
	HeadCount       uint64 `json:"head_count"`             //
	HeadCountKV     uint64 `json:"head_count_kv"`          // grouped-query attention shrinks the KV cache
	KeyLength       uint64 `json:"key_length"`             // per head
	ValueLength     uint64 `json:"value_length"`           // per head
	VocabSize       uint64 `json:"vocab_size"`             // tokenizer.ggml.tokens
	Tokenizer       string `json:"tokenizer"`              // tokenizer.ggml.model: gpt2, llama…
	ChatTemplate    bool   `json:"chat_template"`          // tokenizer.chat_template present
	Pooling         bool   `json:"pooling,omitempty"`      // an embedding model (pooling_type set)
	PoolingType     string `json:"pooling_type,omitempty"` // its value as llama-server's --pooling names it: none, mean, cls, last, rank
	HeaderBytes     int64  `json:"header_bytes"`           // where the tensor data starts
	FileBytes       int64  `json:"file_bytes"`             //
}

// Error is a refusal, with the reasons an uploader can act on.
type Error struct{ Reasons []string }

func (e *Error) Error() string { return "GGUF refused: " + strings.Join(e.Reasons, "; ") }

func refuse(format string, a ...any) error {
	return &Error{Reasons: []string{fmt.Sprintf(format, a...)}}
}

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// Check parses the header of the GGUF file at path and refuses what it must.
func Check(path string, lim Limits) (info Info, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return Info{}, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, refuse("not a regular file")
	}
	if err := sniff(path); err != nil {
		return Info{}, err
	}
	defer func() {
		if r := recover(); r != nil { // the parser's value accessors panic on a mistyped key
			info, err = Info{}, refuse("malformed header: %v", r)
		}
	}()
	gf, err := gguf.ParseGGUFFile(path, gguf.SkipLargeMetadata())
	if err != nil {
		return Info{}, refuse("malformed header: %v", err)
	}
	return summarise(gf, st.Size(), lim)
}

// sniff reads the magic and version before the parser opens the file (the
// parser also opens the sibling shards a name like x-00001-of-00002.gguf
// implies; the backoffice names the file itself).
func sniff(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	var head [8]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return refuse("shorter than a GGUF header")
	}
	if string(head[:4]) != Magic {
		return refuse("not a GGUF file (magic %q)", head[:4])
	}
	if v := binary.LittleEndian.Uint32(head[4:]); v < 2 || v > 3 {
		return refuse("GGUF version %d; llama.cpp reads versions 2 and 3", v)
	}
	return nil
}

func summarise(gf *gguf.GGUFFile, size int64, lim Limits) (Info, error) {
	var why []string
	add := func(format string, a ...any) { why = append(why, fmt.Sprintf(format, a...)) }
	if n := len(gf.Header.MetadataKV); n > lim.MaxMetadata {
		add("%d metadata entries, at most %d", n, lim.MaxMetadata)
	}
	if n := len(gf.TensorInfos); n == 0 {
		add("no tensors")
	} else if n > lim.MaxTensors {
		add("%d tensors, at most %d", n, lim.MaxTensors)
	}
	if gf.TensorDataStartOffset > lim.MaxHeaderSize {
		add("a header of %d bytes, at most %d", gf.TensorDataStartOffset, lim.MaxHeaderSize)
	}
	arch, ok := gf.Header.MetadataKV.Get("general.architecture")
	if !ok || arch.ValueType != gguf.GGUFMetadataValueTypeString || arch.ValueString() == "" {
		add("no general.architecture")
	}
	if t, ok := gf.Header.MetadataKV.Get("general.type"); ok && (t.ValueType != gguf.GGUFMetadataValueTypeString || t.ValueString() != "model") {
		add("general.type is not \"model\" (an adapter, a projector or an importance matrix is not a model to serve)")
	}
	align := uint64(32)
	if a, ok := gf.Header.MetadataKV.Get("general.alignment"); ok {
		if a.ValueType != gguf.GGUFMetadataValueTypeUint32 || a.ValueUint32() == 0 || a.ValueUint32()%8 != 0 {
			add("general.alignment must be a uint32 multiple of 8")
		} else {
			align = uint64(a.ValueUint32())
		}
	}
	held := uint64(0)
	if gf.TensorDataStartOffset >= 0 && gf.TensorDataStartOffset <= size {
		held = uint64(size - gf.TensorDataStartOffset)
	}
	for i, ti := range gf.TensorInfos {
		n := ti.Bytes()
		if ti.Offset%align != 0 {
			add("tensor %q: offset %d is not on the alignment of %d", ti.Name, ti.Offset, align)
		}
		if ti.Offset > held || n > held-ti.Offset {
			add("tensor %q: %d bytes at offset %d, past the %d bytes of tensor data", ti.Name, n, ti.Offset, held)
		}
		if len(why) > 8 || i > lim.MaxTensors {
			break
		}
	}
	if len(why) > 0 {
		return Info{}, &Error{Reasons: why}
	}

	a := gf.Architecture()
	md := gf.Metadata()
	tk := gf.Tokenizer()
	info := Info{
		Architecture:    a.Architecture,
		Name:            md.Name,
		FileType:        strings.TrimPrefix(md.FileTypeDescriptor, "MOSTLY_"),
		Parameters:      uint64(gf.ModelParameters),
		TensorBytes:     gf.TensorInfos.Bytes(),
		Tensors:         len(gf.TensorInfos),
		ContextLength:   a.MaximumContextLength,
		EmbeddingLength: a.EmbeddingLength,
		Layers:          a.BlockCount,
		HeadCount:       a.AttentionHeadCount,
		HeadCountKV:     a.AttentionHeadCountKV,
		KeyLength:       uint64(a.AttentionKeyLength),
		ValueLength:     uint64(a.AttentionValueLength),
		VocabSize:       tk.TokensLength,
		Tokenizer:       tk.Model,
		HeaderBytes:     gf.TensorDataStartOffset,
		FileBytes:       size,
	}
	if info.FileType == "" {
		info.FileType = md.FileType.String()
	}
	_, info.ChatTemplate = gf.Header.MetadataKV.Get("tokenizer.chat_template")
	if p, ok := gf.Header.MetadataKV.Get(a.Architecture + ".pooling_type"); ok {
		info.Pooling = true
		name, known := "", false
		if p.ValueType.IsNumeric() && p.ValueType != gguf.GGUFMetadataValueTypeFloat32 && p.ValueType != gguf.GGUFMetadataValueTypeFloat64 {
			name, known = PoolingName(gguf.ValueNumeric[int64](p))
		}
		if !known {
			add("%s.pooling_type is not one of llama.cpp's pooling types (0 none, 1 mean, 2 cls, 3 last, 4 rank)", a.Architecture)
		}
		info.PoolingType = name
	}
	if info.HeadCountKV == 0 {
		info.HeadCountKV = info.HeadCount
	}
	switch {
	case info.ContextLength == 0:
		add("no %s.context_length", info.Architecture)
	case info.ContextLength > lim.MaxContext:
		add("a context of %d positions, at most %d", info.ContextLength, lim.MaxContext)
	}
	if info.Layers == 0 || info.EmbeddingLength == 0 || info.HeadCount == 0 {
		add("no block_count, embedding_length or attention.head_count for %s", info.Architecture)
	}
	if info.VocabSize == 0 {
		add("no tokenizer (tokenizer.ggml.tokens): llama.cpp needs the vocabulary in the file")
	}
	if len(why) > 0 {
		return Info{}, &Error{Reasons: why}
	}
	return info, nil
}

// PoolingName is llama.cpp's name (its --pooling flag's value) of the
// pooling type v of a GGUF's {arch}.pooling_type.
func PoolingName(v int64) (string, bool) {
	names := []string{"none", "mean", "cls", "last", "rank"}
	if v < 0 || v >= int64(len(names)) {
		return "", false
	}
	return names[v], true
}

// Embeds reports whether the model pools its sequence into one vector that
// /v1/embeddings can answer (mean, cls or last; none answers a vector per
// token and rank a score).
func (i Info) Embeds() bool {
	return i.PoolingType == "mean" || i.PoolingType == "cls" || i.PoolingType == "last"
}
