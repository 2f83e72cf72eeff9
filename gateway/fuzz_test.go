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

// FuzzGenHead: an OpenAI-compatible body's head never panics; an accepted
// body names a model, and asking it for the usage event gives valid JSON
// that asks for it.
func FuzzGenHead(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true}`, `{"model":"m","stream_options":{"include_usage":false}}`, `{"model":"m","stream_options":null}`,
		`{"model":""}`, `{"model":1}`, `[]`, ``, `{}`, ` {"model":"m"} `, `{"model":"m","stream_options":[1]}`, `{"model":"m"} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, _, err := decodeGenHead(body)
		if err != nil {
			return
		}
		if h.Model == "" {
			t.Fatal("accepted a body without a model")
		}
		out, err := withIncludeUsage(body, h)
		if err != nil {
			return // (a body json.Unmarshal took but cannot be rewritten is refused)
		}
		if !json.Valid(out) {
			t.Fatalf("%q -> invalid %q", body, out)
		}
		if _, inc, err := decodeGenHead(out); err != nil || !inc {
			t.Fatalf("%q -> %q: include_usage %v %v", body, out, inc, err)
		}
	})
}

// FuzzNLPGeneration: NLP Cloud's generation and chatbot bodies never panic
// and an accepted one becomes a valid replica request.
func FuzzNLPGeneration(f *testing.F) {
	for _, s := range []string{
		`{"text":"x","max_length":5}`, `{"text":""}`, `{"text":"x","top_p":0}`, `{"input":"x","history":[{"input":"a","response":"b"}]}`,
		`{"input":"x","context":"c","max_length":-1}`, `{"text":"x","unknown":1}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte) (genCall, error){generationCall, chatbotCall} {
			c, err := decode(body)
			if err != nil {
				continue
			}
			if !json.Valid(c.body) || c.stream || c.answer == nil {
				t.Fatalf("%q -> %+v", body, c)
			}
		}
	})
}

// FuzzEmbeddingsAnswers: an embedding GGUF replica's /v1/embeddings answer
// (whatever it holds) never panics, and an accepted one gives one
// embeddings answer per input, each with a vector, as valid JSON.
func FuzzEmbeddingsAnswers(f *testing.F) {
	for _, s := range []string{
		`{"data":[{"index":1,"embedding":[0.1]},{"index":0,"embedding":[0.2,0.3]}],"usage":{"prompt_tokens":3}}`,
		`{"data":[{"embedding":[1]}]}`, `{"data":[{"index":5,"embedding":[1]}]}`, `{"data":[{"index":0,"embedding":[]}]}`,
		`{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]}`, `{"data":null}`, `[]`, ``,
	} {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, n uint8) {
		answers, err := embeddingsAnswers(body, int(n%8))
		if err != nil {
			return
		}
		if len(answers) != int(n%8) {
			t.Fatalf("%q: %d answers for %d inputs", body, len(answers), n%8)
		}
		for _, a := range answers {
			e, ok := a.(embeddingsAnswer)
			if !ok || len(e.Embeddings) != 1 || len(e.Embeddings[0]) == 0 {
				t.Fatalf("%q: answer %+v", body, a)
			}
		}
		if out := appendAnswers(nil, answers, false); !json.Valid(out) {
			t.Fatalf("%q: invalid JSON %s", body, out)
		}
	})
}
