package models

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// A request's cost to the model is its tokens, and a text's tokens are only
// known once it is tokenized. The HTTP handler therefore tokenizes each text
// itself (Model.Prepare), on the request's own goroutine rather than on the
// replica's one inference loop, and so learns two things before queueing:
//
//   - how many tokens the model will be given (at most max_position_embeddings
//     per text), which the per-request and per-batch token caps count;
//   - where the model's tokens end in the text: the text is cut right after
//     its last kept token, so the pipeline, which tokenizes again inside the
//     loop, reads a few hundred characters instead of the character cut's
//     16 per position (truncate.go). A 16 KB text cost the loop 64 positions
//     × 16 characters of tokenizing before; now about what the model keeps.
//
// The cut is checked, not assumed: the cut text must encode to the same
// first max_position_embeddings tokens (ids, type ids, masks, offsets) as the
// text did, else the character cut is kept. So any tokenizer, and any text,
// gives the model exactly what it gave before (TestPrepareKeepsOutputs).

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

// prepare cuts text to what the model keeps and counts the tokens it will
// be given.
func (c *tokenCounter) prepare(text string) (string, int, error) {
	if c.maxPos < 2 { // no limit known: the model is given every token
		e, err := c.tk.EncodeSingle(text, true)
		if err != nil {
			return "", 0, fmt.Errorf("tokenize: %w", err)
		}
		return text, len(e.Ids), nil
	}
	t := truncateChars(text, c.maxPos*charsPerToken)
	// prefixes of 2, 4, 8… characters per position until one holds more
	// tokens than the model keeps: at most twice the characters needed
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
			return "", 0, fmt.Errorf("tokenize: %w", err)
		}
		if len(e.Ids) > c.maxPos {
			return c.cut(t, e), c.maxPos, nil
		}
	}
	e, err := c.tk.EncodeSingle(t, true)
	if err != nil {
		return "", 0, fmt.Errorf("tokenize: %w", err)
	}
	if len(e.Ids) <= c.maxPos {
		return t, len(e.Ids), nil
	}
	return c.cut(t, e), c.maxPos, nil
}

// cut shortens t, whose encoding (or a prefix's, of whole words) e has more
// than maxPos tokens, to end after the last token the model keeps, if the
// shortened text encodes to the same first maxPos tokens; else t.
func (c *tokenCounter) cut(t string, e *tokenizer.Encoding) string {
	end := e.Offsets[c.maxPos-1]
	if len(end) != 2 || end[1] <= 0 {
		return t
	}
	s := truncateChars(t, end[1])
	if len(s) >= len(t) {
		return t
	}
	got, err := c.tk.EncodeSingle(s, true)
	if err != nil || !samePrefix(got, e, c.maxPos) {
		return t
	}
	return s
}

// samePrefix: a and b agree on their first n tokens in everything the
// pipeline reads.
func samePrefix(a, b *tokenizer.Encoding, n int) bool {
	if len(a.Ids) < n || len(b.Ids) < n || len(a.Offsets) < n || len(b.Offsets) < n {
		return false
	}
	if !slices.Equal(a.Ids[:n], b.Ids[:n]) || !slices.Equal(a.Tokens[:n], b.Tokens[:n]) {
		return false
	}
	for _, p := range [][2][]int{{a.TypeIds, b.TypeIds}, {a.AttentionMask, b.AttentionMask}, {a.SpecialTokenMask, b.SpecialTokenMask}} {
		if len(p[0]) < n || len(p[1]) < n || !slices.Equal(p[0][:n], p[1][:n]) {
			return false
		}
	}
	for i := range n {
		if !slices.Equal(a.Offsets[i], b.Offsets[i]) {
			return false
		}
	}
	return true
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
	for i, t := range texts {
		var err error
		if out[i], n[i], err = m.counter.prepare(t); err != nil {
			return nil, nil, fmt.Errorf("text %d: %w", i, err)
		}
	}
	return out, n, nil
}
