// Package parity is issue 15's correctness reference: transformers' greedy
// generate and mean pooling on ggufgen.TinyLlama(Seed), written by run.sh
// (make parity-fixture) in a Debian sid root and embedded here, so that
// the image's test (the generate role alone) and the stack's test (the
// whole path through the gateway) compare with one fixture, read one way.
//
// It owns the fixture and its reading; it must not talk to a runtime.
package parity

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/nlpswarm/nlpswarm/modelmgr/ggufcheck/ggufgen"
)

//go:embed testdata/reference.json
var fixture []byte

// Case is one prompt: a completion's (Prompt) or a chat's (Messages), with
// transformers' greedy answer to it.
type Case struct {
	Name      string              `json:"name"`
	Prompt    string              `json:"prompt"`   // a completion's
	Messages  []map[string]string `json:"messages"` // a chat's
	Rendered  string              `json:"rendered"` // the chat through the model's template
	PromptIDs []int               `json:"prompt_ids"`
	MaxTokens int                 `json:"max_tokens"`
	IDs       []int               `json:"ids"`
	Text      string              `json:"text"`
	Logprobs  []float64           `json:"logprobs"` // of each chosen token
	MinMargin float64             `json:"min_margin"`
}

// Reference is testdata/reference.json.
type Reference struct {
	Seed       uint64            `json:"seed"`
	GGUFSHA256 string            `json:"gguf_sha256"`
	Versions   map[string]string `json:"versions"`
	MinMargin  float64           `json:"min_margin"`
	Cases      []Case            `json:"cases"`
	Embeddings []struct {
		Text   string    `json:"text"`
		IDs    []int     `json:"ids"`
		Vector []float64 `json:"vector"`
	} `json:"embeddings"`
}

// Load reads the fixture and builds the model it was made on, checking that
// ggufgen still writes those very bytes.
func Load() (Reference, []byte, error) {
	var ref Reference
	if err := json.Unmarshal(fixture, &ref); err != nil {
		return ref, nil, fmt.Errorf("parity fixture: %w", err)
	}
	model := ggufgen.TinyLlama(ref.Seed).Build()
	if sum := sha256.Sum256(model); hex.EncodeToString(sum[:]) != ref.GGUFSHA256 {
		return ref, nil, fmt.Errorf("ggufgen.TinyLlama(%d) is not the model the fixture was made on (sha256 %x, fixture %s): run make parity-fixture", ref.Seed, sum, ref.GGUFSHA256)
	}
	return ref, model, nil
}
