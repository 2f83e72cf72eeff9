package gateway

import (
	"encoding/json"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"text":"hello"}`, `{"texts":["a","b"]}`, `{"text":"x","parameters":{"top_k":2}}`,
		`{"texts":[]}`, `{"text":""}`, `{"text":1}`, `{"texts":[null]}`, `{"text":"a","texts":["b"]}`,
		`{"text":"a"} {}`, `[]`, `null`, ``, `{"text":"\ud800"}`, `{"texts":"a"}`, `{"parameters":[1],"text":"a"}`,
		`{"text":"a","extra":1}`, "{\"text\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		texts, single, params, err := DecodeRequest(body, 64)
		if err != nil {
			if texts != nil || params != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if len(texts) == 0 || len(texts) > 64 || (single && len(texts) != 1) {
			t.Fatalf("accepted %d texts (single=%v)", len(texts), single)
		}
		for _, s := range texts {
			if s == "" {
				t.Fatal("accepted an empty text")
			}
		}
		if params != nil && !json.Valid(params) {
			t.Fatal("invalid parameters passed on")
		}
		// What is accepted re-encodes into a valid runtime request.
		b, err := json.Marshal(runtimeapi.PredictRequest{Texts: texts, Parameters: params})
		if err != nil || !json.Valid(b) {
			t.Fatalf("runtime request: %v", err)
		}
	})
}

// FuzzInferTexts: the v2 infer route's text count never panics, is never
// negative, and an accepted count is within the limit.
func FuzzInferTexts(f *testing.F) {
	for _, s := range []string{
		`{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["a","b"]}]}`,
		`{"inputs":[{"name":"text","shape":[2,1],"datatype":"BYTES","data":[["a"],["b"]]}]}`,
		`{"inputs":[{"name":"text","shape":[-1],"data":[]}]}`,
		`{"inputs":[{"name":"text","shape":[4294967296,4294967296]}]}`,
		`{"inputs":[{"name":"other","shape":[100]}]}`, `{"inputs":[]}`, `[]`, ``, `{"inputs":[{"name":"text","shape":[]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := checkInferTexts(body, 64)
		if err == nil && (n < 1 || n > 64) {
			t.Fatalf("accepted %d texts", n)
		}
	})
}
