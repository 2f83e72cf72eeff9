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
// A long text is tokenized on a prefix of whole words (probes below), not
// whole: BERT's pre-tokenizer splits on spaces and punctuation first, so a
// prefix that ends at a space encodes to the same first tokens as the text;
// TestPrepareKeepsOutputs checks it on every fixture against the whole
// text, uncut, straight through the pipeline (English, no spaces, accents,
// CJK). Before 2026-12-06 the cut was encoded again to check it and the
// pipeline encoded it a third time: the pure-Go tokenizer was most of a
// long request on ORT (BENCHMARKS.md, query of death).

// probeCharsPerToken: a long text is first tokenized on a prefix of this
// many characters per position, cut back to a space, then twice, four
// times… as many, until the prefix holds more tokens than the model keeps
// (English wordpieces are about 4–5 characters; the sentiment fixture's
// 400-word vocabulary nearer 2); the whole character cut last.
const probeCharsPerToken = 2

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
func (c *tokenCounter) prepare(text string) (string, int, *tokenizer.Encoding, error) {
	if c.maxPos < 2 { // no limit known: the model is given every token
		e, err := c.tk.EncodeSingle(text, true)
		if err != nil {
			return "", 0, nil, fmt.Errorf("tokenize: %w", err)
		}
		return text, len(e.Ids), e, nil
	}
	t := truncateChars(text, c.maxPos*charsPerToken)
	// prefixes of probeCharsPerToken, twice, four times… characters per
	// position until one holds more tokens than the model keeps: at most
	// twice the characters needed
	for perPos := probeCharsPerToken; perPos < charsPerToken; perPos *= 2 {
		probe := c.maxPos * perPos
		if len(t) <= probe {
			break
		}
		// whole words only: a word cut in two may encode differently
		p := truncateChars(t, probe)
		i := strings.LastIndexByte(p, ' ')
		if i <= 0 {
			break
		}
		e, err := c.tk.EncodeSingle(p[:i], true)
		if err != nil {
			return "", 0, nil, fmt.Errorf("tokenize: %w", err)
		}
		if len(e.Ids) > c.maxPos {
			return c.cut(t, e), c.maxPos, e, nil
		}
	}
	e, err := c.tk.EncodeSingle(t, true)
	if err != nil {
		return "", 0, nil, fmt.Errorf("tokenize: %w", err)
	}
	if len(e.Ids) <= c.maxPos {
		return t, len(e.Ids), e, nil
	}
	return c.cut(t, e), c.maxPos, e, nil
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
