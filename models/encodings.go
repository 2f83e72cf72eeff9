package models

import (
	"errors"
	"sync"

	"github.com/knights-analytics/hugot/backends"
	"github.com/knights-analytics/hugot/util/safeconv"
	"github.com/sugarme/tokenizer"
)

// The tokens Prepare made on a request's goroutine reach the inference loop
// through encodingCache, keyed by the prepared (cut) text, so the batcher
// and its Predictor interface carry texts as before and the loop does not
// tokenize them again. A text with no entry (evicted, or never prepared: a
// test, the smoke test) is tokenized by the pipeline as before; an encoding
// is a pure function of its text, so either way the model is given the
// same tokens (TestPrepareKeepsOutputs, TestEncodedMatchesPipeline).
//
// The cache is bounded in tokens, not entries (a 512-position text's
// encoding is about 40 KB): two generations of at most maxCachedTokens
// each; when the current one is full it becomes the old one and the old
// one is dropped. An entry lives until two generations pass, which, at the
// default queue of 256 requests, is far longer than a request waits; one
// whose client left before the loop reached it is dropped the same way.
const maxCachedTokens = 1 << 18 // about 20 MiB of encodings per generation

type encodingCache struct {
	mu       sync.Mutex
	cur, old map[string]*tokenizer.Encoding
	tokens   int // in cur
}

// put stores encs[i] (cut to maxPos tokens when maxPos > 0) for texts[i].
func (c *encodingCache) put(texts []string, encs []*tokenizer.Encoding, maxPos int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range encs {
		if e == nil {
			continue
		}
		e = keepTokens(e, maxPos)
		n := len(e.Ids)
		if c.cur == nil || c.tokens+n > maxCachedTokens {
			c.old, c.cur, c.tokens = c.cur, make(map[string]*tokenizer.Encoding), 0
		}
		c.cur[texts[i]] = e
		c.tokens += n
	}
}

// get returns the encodings of texts, or nil unless every text has one.
func (c *encodingCache) get(texts []string) []*tokenizer.Encoding {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*tokenizer.Encoding, len(texts))
	for i, t := range texts {
		e, ok := c.cur[t]
		if !ok {
			if e, ok = c.old[t]; !ok {
				return nil
			}
		}
		out[i] = e
	}
	return out
}

// keepTokens is e cut to its first n tokens (n ≤ 0: all), as hugot cuts an
// encoding to the model's positions; e is not modified.
func keepTokens(e *tokenizer.Encoding, n int) *tokenizer.Encoding {
	if n <= 0 || len(e.Ids) <= n {
		return e
	}
	k := func(s []int) []int { return s[:min(len(s), n)] }
	c := *e
	c.Ids, c.TypeIds, c.AttentionMask, c.SpecialTokenMask = k(e.Ids), k(e.TypeIds), k(e.AttentionMask), k(e.SpecialTokenMask)
	c.Tokens = e.Tokens[:min(len(e.Tokens), n)]
	c.Offsets = e.Offsets[:min(len(e.Offsets), n)]
	return &c
}

// encodedBatch is the pipeline batch hugot's tokenizer would make of texts
// (backends.tokenizeInputsGo, v0.6.1), made from their encodings instead.
func encodedBatch(texts []string, encs []*tokenizer.Encoding) *backends.PipelineBatch {
	b := backends.NewBatch(len(texts))
	b.Input = make([]backends.TokenizedInput, len(texts))
	maxSeq := 0
	for i, e := range encs {
		maxAtt := 0
		for j, v := range e.AttentionMask {
			if v != 0 {
				maxAtt = j
			}
		}
		b.Input[i] = backends.TokenizedInput{
			Raw:               texts[i],
			Tokens:            e.Tokens,
			TokenIDs:          safeconv.IntSliceToUint32Slice(e.Ids),
			TypeIDs:           safeconv.IntSliceToUint32Slice(e.TypeIds),
			AttentionMask:     safeconv.IntSliceToUint32Slice(e.AttentionMask),
			MaxAttentionIndex: maxAtt,
			SpecialTokensMask: safeconv.IntSliceToUint32Slice(e.SpecialTokenMask),
			Offsets:           safeconv.IntOffsetsToUintPairs(e.Offsets),
		}
		maxSeq = max(maxSeq, maxAtt)
	}
	b.MaxSequenceLength = maxSeq + 1
	return b
}

// stages are a hugot pipeline's steps after tokenizing.
type stages[O any] interface {
	GetModel() *backends.Model
	Forward(*backends.PipelineBatch) error
	Postprocess(*backends.PipelineBatch) (O, error)
}

// runEncoded runs pipe on texts given as their encodings: hugot's
// RunPipeline without its tokenizing step (Preprocess is TokenizeInputs,
// then CreateInputTensors, for the three pipelines used here).
func runEncoded[O any](pipe stages[O], runtime string, texts []string, encs []*tokenizer.Encoding) (out O, err error) {
	b := encodedBatch(texts, encs)
	defer func() { err = errors.Join(err, b.Destroy()) }()
	if err = backends.CreateInputTensors(b, pipe.GetModel(), runtime); err != nil {
		return out, err
	}
	if err = pipe.Forward(b); err != nil {
		return out, err
	}
	return pipe.Postprocess(b)
}
