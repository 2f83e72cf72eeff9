// Package tokenizers stands in for github.com/daulet/tokenizers (the Rust
// Hugging Face tokenizer through cgo) in nlpswarm's ORT build: hugot's ORT
// build tag compiles its Rust-tokenizer path, but libtokenizers cannot be
// built here (no crates registry, not in Debian). go.mod replaces the module
// with this one, so the ORT build links no Rust. hugot's ORT backend still
// calls FromBytes while loading a model; models/ort then swaps in hugot's
// pure-Go tokenizer (the one the parity tests cover) before any text is
// encoded. Every method that would tokenize panics: reaching one means that
// swap was skipped, a bug to be seen at once, not papered over.
package tokenizers

import "errors"

// Offset is a token's [start, end) in the input.
type Offset [2]uint

// Encoding is what an encode returns.
type Encoding struct {
	IDs               []uint32
	TypeIDs           []uint32
	SpecialTokensMask []uint32
	AttentionMask     []uint32
	Tokens            []string
	Offsets           []Offset
}

// EncodeOption selects the attributes an encode returns.
type EncodeOption func(*uint8)

// Tokenizer is an empty handle: nothing is loaded.
type Tokenizer struct{}

// TokenizerOption configures FromBytes.
type TokenizerOption func(*Tokenizer)

// ErrNotLinked is what every tokenizing call reports.
var ErrNotLinked = errors.New("the Rust tokenizer is not linked in nlpswarm's ORT build: use hugot's Go tokenizer")

// FromBytes returns an empty handle so that hugot's ORT model load goes on.
func FromBytes(_ []byte, _ ...TokenizerOption) (*Tokenizer, error) { return &Tokenizer{}, nil }

// FromFile is not served.
func FromFile(string) (*Tokenizer, error) { return nil, ErrNotLinked }

// Close frees nothing.
func (*Tokenizer) Close() error { return nil }

// EncodeWithOptions panics: see the package comment.
func (*Tokenizer) EncodeWithOptions(string, bool, ...EncodeOption) Encoding { panic(ErrNotLinked) }

// Encode panics: see the package comment.
func (*Tokenizer) Encode(string, bool) ([]uint32, []string) { panic(ErrNotLinked) }

// Decode panics: see the package comment.
func (*Tokenizer) Decode([]uint32, bool) string { panic(ErrNotLinked) }

// VocabSize panics: see the package comment.
func (*Tokenizer) VocabSize() uint32 { panic(ErrNotLinked) }

func option(*uint8) {}

// WithReturnAllAttributes is a no-op option.
func WithReturnAllAttributes() EncodeOption { return option }

// WithReturnTypeIDs is a no-op option.
func WithReturnTypeIDs() EncodeOption { return option }

// WithReturnSpecialTokensMask is a no-op option.
func WithReturnSpecialTokensMask() EncodeOption { return option }

// WithReturnTokens is a no-op option.
func WithReturnTokens() EncodeOption { return option }

// WithReturnAttentionMask is a no-op option.
func WithReturnAttentionMask() EncodeOption { return option }

// WithReturnOffsets is a no-op option.
func WithReturnOffsets() EncodeOption { return option }
