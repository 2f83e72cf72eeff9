package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/nlpswarm/nlpswarm/internal/customerapi"
	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// The customer's side of the wire (tasks, request, answers) is
// customerapi's: the client package reads the same types.
var taskRoutes = customerapi.RuntimeTask

type customerRequest = customerapi.Request

// DecodeRequest parses a customer body: {"text": "..."} or {"texts": [...]},
// optionally with "parameters" (an object passed to the runtime). single says
// the answer is for one text rather than a list.
func DecodeRequest(body []byte, maxTexts int) (texts []string, single bool, params json.RawMessage, err error) {
	texts, single, ok := decodeSimple(body) // the usual bodies, fast (taskjson.go)
	if !ok {
		if texts, single, params, err = decodeGeneral(body); err != nil {
			return nil, false, nil, err
		}
	}
	if err := checkTexts(texts, maxTexts); err != nil {
		return nil, false, nil, err
	}
	return texts, single, params, nil
}

// decodeGeneral is DecodeRequest's encoding/json path: every shape, every
// error worded.
func decodeGeneral(body []byte) (texts []string, single bool, params json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req customerRequest
	if err := dec.Decode(&req); err != nil {
		return nil, false, nil, fmt.Errorf("body is not a JSON object of the expected shape: %s", jsonErr(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false, nil, errors.New("unexpected data after the JSON object")
	}
	switch {
	case req.Text != nil && req.Texts != nil:
		return nil, false, nil, errors.New(`give either "text" or "texts", not both`)
	case req.Text != nil:
		texts, single = []string{*req.Text}, true
	case req.Texts != nil:
		texts = req.Texts
		if len(texts) == 0 {
			return nil, false, nil, errors.New(`"texts" is empty`)
		}
	default:
		return nil, false, nil, errors.New(`want "text" (a string) or "texts" (a list of strings)`)
	}
	if len(req.Parameters) > 0 && !bytes.Equal(req.Parameters, []byte("null")) {
		if bytes.TrimSpace(req.Parameters)[0] != '{' {
			return nil, false, nil, errors.New(`"parameters" must be an object`)
		}
		params = req.Parameters
	}
	return texts, single, params, nil
}

// checkTexts holds the rules every request's texts follow.
func checkTexts(texts []string, maxTexts int) error {
	if maxTexts > 0 && len(texts) > maxTexts {
		return fmt.Errorf(`"texts" has %d texts; at most %d per request`, len(texts), maxTexts)
	}
	for i, t := range texts {
		if t == "" {
			return fmt.Errorf("text %d is empty", i)
		}
		if !utf8.ValidString(t) {
			return fmt.Errorf("text %d is not valid UTF-8", i)
		}
	}
	return nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: want %s", te.Field, te.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "body is empty or truncated"
	}
	return err.Error()
}

// The runtime's side of the wire (/predict's request, the outputs) is
// runtimeapi's, the customer's customerapi's.

type (
	entity           = customerapi.Entity
	labelsAnswer     = customerapi.LabelsAnswer
	entitiesAnswer   = customerapi.EntitiesAnswer
	embeddingsAnswer = customerapi.EmbeddingsAnswer
)

// translateAll decodes a runtime answer to /predict and turns its outputs
// into the customer's shape, one per text. The outputs are decoded straight
// into the task's types (one pass over the JSON): the usual
// text-classification answer by decodeLabelsSimple (taskjson.go), the rest
// with goccy/go-json behind encoding/json's validity check
// (decodeReplicaJSON: goccy alone panics on some malformed answers), about
// half encoding/json's CPU on these answers (BenchmarkDecodeReplicaAnswer:
// 8.8–9.0 µs against 19.0–19.2 on 8 texts' entities; goccy alone 4.8–5.3).
// Customer bodies keep encoding/json (DecodeRequest).
func translateAll(task string, body []byte, texts []string) ([]any, error) {
	out := make([]any, 0, len(texts))
	switch task {
	case runtimeapi.TextClassification:
		var rr struct {
			Outputs [][]runtimeapi.Label `json:"outputs"`
		}
		if outs, ok := decodeLabelsSimple(body); ok { // the usual answer, fast (taskjson.go)
			rr.Outputs = outs
		} else if err := decodeReplicaJSON(body, &rr); err != nil {
			return nil, err
		}
		if len(rr.Outputs) != len(texts) {
			return nil, errOutputCount
		}
		for _, ls := range rr.Outputs {
			if ls == nil {
				ls = []runtimeapi.Label{}
			}
			out = append(out, labelsAnswer{ScoredLabels: ls})
		}
	case runtimeapi.TokenClassification:
		var rr struct {
			Outputs [][]runtimeapi.Entity `json:"outputs"`
		}
		if err := decodeReplicaJSON(body, &rr); err != nil {
			return nil, err
		}
		if len(rr.Outputs) != len(texts) {
			return nil, errOutputCount
		}
		for i, es := range rr.Outputs {
			text := texts[i]
			ascii := utf8.RuneCountInString(text) == len(text)
			ans := entitiesAnswer{Entities: make([]entity, 0, len(es))}
			for _, e := range es {
				typ := e.EntityGroup
				if typ == "" {
					typ = e.Entity
				}
				word := e.Word
				if ascii && e.Start >= 0 && e.End <= len(text) && e.Start < e.End {
					word = text[e.Start:e.End] // ASCII: offsets are the same in bytes and characters
				}
				ans.Entities = append(ans.Entities, entity{Text: word, Type: typ, Start: e.Start, End: e.End, Score: e.Score})
			}
			out = append(out, ans)
		}
	case runtimeapi.FeatureExtraction:
		var rr struct {
			Outputs []runtimeapi.EmbeddingOf[float64] `json:"outputs"` // float64: the runtime's digits kept as written
		}
		if err := decodeReplicaJSON(body, &rr); err != nil {
			return nil, err
		}
		if len(rr.Outputs) != len(texts) {
			return nil, errOutputCount
		}
		for _, o := range rr.Outputs {
			if o.Embedding == nil {
				return nil, errors.New("output lacks an embedding")
			}
			out = append(out, embeddingsAnswer{Embeddings: [][]float64{o.Embedding}})
		}
	default:
		return nil, fmt.Errorf("unknown task %q", task)
	}
	return out, nil
}

var errOutputCount = errors.New("runtime gave a different number of outputs than texts")
