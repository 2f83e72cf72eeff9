package customerapi

import (
	"encoding/json"
	"testing"
)

func TestPaths(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{TaskPath("sentiment", TaskSentiment), "/v1/sentiment/sentiment"},
		{TaskPath("a/b", "../x"), "/v1/a%2Fb/..%2Fx"}, // one segment each, whatever the name
		{InferPath("ner"), "/v2/models/ner/infer"},
		{InferPath("a b"), "/v2/models/a%20b/infer"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s, want %s", tt.got, tt.want)
		}
	}
}

// A request encodes as the gateway reads it: only the fields given.
func TestRequestJSON(t *testing.T) {
	text := "hi"
	for _, tt := range []struct {
		r    Request
		want string
	}{
		{Request{Text: &text}, `{"text":"hi"}`},
		{Request{Texts: []string{"a", "b"}, Parameters: json.RawMessage(`{"top_k":1}`)}, `{"texts":["a","b"],"parameters":{"top_k":1}}`},
	} {
		b, err := json.Marshal(tt.r)
		if err != nil || string(b) != tt.want {
			t.Errorf("%s %v, want %s", b, err, tt.want)
		}
	}
}
