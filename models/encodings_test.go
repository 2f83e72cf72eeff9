package models

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/sugarme/tokenizer"
)

// The loop runs prepared texts from the tokens Prepare made, and they give
// the outputs the pipeline gives tokenizing the same texts itself.
func TestEncodedMatchesPipeline(t *testing.T) {
	ctx := context.Background()
	texts := prepareTexts()
	for _, c := range []struct{ fixture, task string }{{"sentiment", TextClassification}, {"ner", TokenClassification}, {"embeddings", FeatureExtraction}} {
		m, err := LoadWith(fixture(t, c.fixture), c.fixture, c.task, EngineConfig{Backend: BackendGo})
		if err != nil {
			t.Fatal(err)
		}
		var p Params
		if err := p.Check(c.task); err != nil {
			t.Fatal(err)
		}
		cut, _, err := m.Prepare(texts)
		if err != nil {
			t.Fatal(err)
		}
		if m.encoded.get(cut) == nil {
			t.Fatalf("%s: Prepare kept no tokens for the loop", c.fixture)
		}
		got, err := m.Predict(ctx, cut, p)
		if err != nil {
			t.Fatal(err)
		}
		m.encoded = encodingCache{} // the pipeline tokenizes them itself
		want, err := m.Predict(ctx, cut, p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: from Prepare's tokens %v\npipeline's %v", c.fixture, got, want)
		}
		m.Close()
	}
}

// The cache holds at most two generations of maxCachedTokens tokens, and
// keeps what a request put until the next generation but one.
func TestEncodingCacheBounded(t *testing.T) {
	var c encodingCache
	enc := func(n int) *tokenizer.Encoding {
		return &tokenizer.Encoding{Ids: make([]int, n), TypeIds: make([]int, n), AttentionMask: make([]int, n),
			SpecialTokenMask: make([]int, n), Tokens: make([]string, n), Offsets: make([][]int, n)}
	}
	c.put([]string{"first"}, []*tokenizer.Encoding{enc(600)}, 512)
	if e := c.get([]string{"first"}); e == nil || len(e[0].Ids) != 512 {
		t.Fatalf("first: %v, want 512 tokens kept", e)
	}
	for i := range 3 * maxCachedTokens / 512 {
		c.put([]string{strings.Repeat("x", i+10)}, []*tokenizer.Encoding{enc(512)}, 512)
		if c.tokens > maxCachedTokens || len(c.cur)+len(c.old) > 2*maxCachedTokens/512 {
			t.Fatalf("after %d: %d tokens, %d+%d entries", i, c.tokens, len(c.cur), len(c.old))
		}
	}
	if c.get([]string{"first"}) != nil {
		t.Error("first still held after three generations")
	}
	if c.get([]string{"first", strings.Repeat("x", 10)}) != nil {
		t.Error("get answers a batch with a text it has no tokens for")
	}
}
