package models

import (
	"context"
	"testing"
)

// FuzzPredictRequest: any body either decodes into clean texts the model can
// run, or is refused with a 4xx; running what decodes never fails.
func FuzzPredictRequest(f *testing.F) {
	for _, s := range []string{
		`{"texts":["i love this movie"]}`, `{"texts":[""],"parameters":{"top_k":1}}`, `{"texts":["\ud800"]}`,
		"{\"texts\":[\"\xff\xfe\"]}", `{"texts":["a\u0000b"]}`, `{"texts":[]}`, `{"texts":[1]}`, `[`, `null`,
		`{"texts":["x"],"parameters":{"aggregation_strategy":"max"}}`,
	} {
		f.Add(s)
	}
	m := sentiment(f)
	f.Fuzz(func(t *testing.T, body string) {
		texts, p, herr := DecodePredict([]byte(body), TextClassification, Limits{MaxTexts: 8, MaxChars: 2000})
		if herr != nil {
			if herr.status < 400 || herr.status >= 500 {
				t.Fatalf("status %d for a bad request", herr.status)
			}
			return
		}
		// as the server does: texts are prepared on the request's goroutine
		// first, and a text the tokenizer fails on is the customer's 422
		cut, _, err := m.Prepare(texts)
		if err != nil {
			return
		}
		out, err := m.Predict(context.Background(), cut, p)
		if err != nil || len(out) != len(texts) {
			t.Fatalf("decoded request failed in the model: %v", err)
		}
	})
}
