package models

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// A request's cost to the model is its tokens, and a text's tokens are only
// known once it is tokenized. The HTTP handler therefore tokenizes each text
// itself (Model.Prepare), on the request's own goroutine rather than on the
// replica's one inference loop, and once: it learns how many tokens the
// model will be given (at most max_position_embeddings per text), which the
// per-request and per-batch token caps count, and keeps those tokens for
// the loop (encodings.go), which hands them to the pipeline without
// tokenizing again. The text is cut right after its last kept token (the
// text the tokens' offsets point into, and what a text whose tokens were
// not kept is tokenized from on the loop).
//
// A long text is tokenized on a head of whole words, not whole, and in
// pieces (encodeHead): BERT's pre-tokenizer splits on spaces and
// punctuation first, so pieces that end at a space encode to the same
// tokens as the text; TestPrepareKeepsOutputs checks it on every fixture
// against the whole text, uncut, straight through the pipeline (English,
// no spaces, accents, CJK). Before 2026-12-06 the cut was encoded again to
// check it and the pipeline encoded it a third time, and until 2026-12-07
// the head was found by encoding prefixes of 2, 4, 8… characters per
// position, each from the start: the pure-Go tokenizer was most of a long
// request on ORT (BENCHMARKS.md, query of death). Now each character of
// the head is tokenized once.

// firstPieceCharsPerToken: a long text's first piece is this many characters
// per position, cut back to a space (English wordpieces are about 4–5
// characters; the sentiment fixture's 400-word vocabulary nearer 2).
const firstPieceCharsPerToken = 2

// pieceMargin: each later piece is the tokens still wanted times the
// characters per token seen so far, times this, plus pieceSlack bytes, so
// that most long texts need two pieces and overshoot by about a quarter of
// the second.
const (
	pieceMargin = 1.25
	pieceSlack  = 16
)

// tokenCounter tokenizes texts outside the inference loop. Its tokenizer is
// its own instance (the pipeline's is used by the loop) and is safe for
// concurrent encodes (TestPrepareConcurrent under -race).
type tokenCounter struct {
	tk     *tokenizer.Tokenizer
	maxPos int
}

func newTokenCounter(dir string, maxPos int) (*tokenCounter, error) {
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("token counter: %w", err)
	}
	tk, err := pretrained.FromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("token counter: tokenizer.json: %w", err)
	}
	return &tokenCounter{tk: tk, maxPos: maxPos}, nil
}

// prepare cuts text to what the model keeps, counts the tokens it will be
// given, and returns them (at most maxPos), ready for the pipeline: the text
// is tokenized once, here, and not again on the loop (encodings.go).
func (c *tokenCounter) prepare(text string) (cut string, n int, e *tokenizer.Encoding, err error) {
	// the tokenizer library panics on some texts (an index out of range in
	// its BERT normalizer's clean-up of U+FFFD runs, found by
	// FuzzPredictRequest): such a text gets the customer's 422, not a
	// dropped connection and a replica counted as failing
	defer func() {
		if r := recover(); r != nil {
			cut, n, e, err = "", 0, nil, fmt.Errorf("tokenize: the tokenizer failed on this text: %v", r)
		}
	}()
	if c.maxPos < 2 { // no limit known: the model is given every token
		e, err = c.tk.EncodeSingle(text, true)
		if err != nil {
			return "", 0, nil, fmt.Errorf("tokenize: %w", err)
		}
		return text, len(e.Ids), e, nil
	}
	t := truncateChars(text, c.maxPos*charsPerToken)
	e, err = c.encodeHead(t, len(truncateChars(t, c.maxPos*firstPieceCharsPerToken)))
	if err != nil {
		return "", 0, nil, fmt.Errorf("tokenize: %w", err)
	}
	if len(e.Ids) <= c.maxPos {
		return t, len(e.Ids), e, nil
	}
	return c.cut(t, e), c.maxPos, e, nil
}

// encodeHead encodes t, or a head of it of whole words that holds more
// tokens than the model keeps, with the special tokens: t is tokenized in
// pieces, each cut back to a space, and each character once. The first
// piece is first bytes; each later one is sized from the characters per
// token seen so far (pieceMargin). A piece with no space to cut at takes
// the rest of t.
//
// Pieces that end at a space encode to the whole's tokens (BERT's
// pre-tokenizer splits words at spaces first, the normalizer works per
// character): TestEncodeHeadMatchesWhole checks every field against the
// head encoded in one piece, on every fixture's tokenizer.
func (c *tokenCounter) encodeHead(t string, first int) (*tokenizer.Encoding, error) {
	var head tokenizer.Encoding
	size, start := first, 0
	for start < len(t) && len(head.Ids) <= c.maxPos {
		end := len(t)
		if start+size < len(t) {
			if i := strings.LastIndexByte(t[start:start+size], ' '); i > 0 {
				end = start + i
			}
		}
		if start == 0 && end == len(t) { // one piece: the ordinary path
			return c.tk.EncodeSingle(t, true)
		}
		e, err := c.tk.EncodeSingleSequence(tokenizer.NewInputSequence(t[start:end]), 0, tokenizer.Byte)
		if err != nil {
			return nil, err
		}
		appendPiece(&head, e, start)
		start = end
		perToken := float64(start) / float64(max(len(head.Ids), 1))
		size = int(float64(c.maxPos+1-len(head.Ids))*perToken*pieceMargin) + pieceSlack
	}
	return c.tk.PostProcess(&head, nil, true), nil
}

// appendPiece appends e, the encoding of a piece that starts at byte shift
// of the text, to head: its offsets and word indexes continue head's.
func appendPiece(head, e *tokenizer.Encoding, shift int) {
	words := 0
	for _, w := range head.Words {
		words = max(words, w+1)
	}
	head.Ids = append(head.Ids, e.Ids...)
	head.TypeIds = append(head.TypeIds, e.TypeIds...)
	head.Tokens = append(head.Tokens, e.Tokens...)
	head.SpecialTokenMask = append(head.SpecialTokenMask, e.SpecialTokenMask...)
	head.AttentionMask = append(head.AttentionMask, e.AttentionMask...)
	for _, w := range e.Words {
		if w >= 0 {
			w += words
		}
		head.Words = append(head.Words, w)
	}
	for _, o := range e.Offsets {
		head.Offsets = append(head.Offsets, []int{o[0] + shift, o[1] + shift})
	}
}

// cut shortens t, whose encoding (or a prefix's, of whole words) e has more
// than maxPos tokens, to end after the last token the model keeps. It is
// not encoded again: the model is given e's first maxPos tokens, and the
// cut is the text their offsets point into (what an entity's word is read
// from).
func (c *tokenCounter) cut(t string, e *tokenizer.Encoding) string {
	end := e.Offsets[c.maxPos-1]
	if len(end) != 2 || end[1] <= 0 {
		return t
	}
	return truncateChars(t, end[1])
}

// Preparer is a Predictor that can prepare texts before they queue: cut
// them to what the model keeps and count its tokens (Model does).
type Preparer interface {
	Prepare(texts []string) (cut []string, tokens []int, err error)
}

// Prepare cuts each text to what the model keeps and counts the tokens the
// model will be given; safe for concurrent use, and meant for the request's
// goroutine, not the inference loop. texts is not modified.
func (m *Model) Prepare(texts []string) ([]string, []int, error) {
	if m.counter == nil {
		return nil, nil, fmt.Errorf("prepare: model %s has no tokenizer", m.Name)
	}
	out, n := make([]string, len(texts)), make([]int, len(texts))
	encs := make([]*tokenizer.Encoding, len(texts))
	for i, t := range texts {
		var err error
		if out[i], n[i], encs[i], err = m.counter.prepare(t); err != nil {
			return nil, nil, fmt.Errorf("text %d: %w", i, err)
		}
	}
	m.encoded.put(out, encs, m.counter.maxPos)
	return out, n, nil
}
