package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	gojson "github.com/goccy/go-json"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// The hand-written appenders write byte for byte what encoding/json's
// Encoder writes, so customers see the same answers as before.
func TestAppendersMatchEncodingJSON(t *testing.T) {
	odd := []string{"", "POSITIVE", `quote " backslash \ slash /`, "<b>&amp;</b>", "tab\tnew\nline\rcr\bbs\fff",
		"\x00\x01\x1f\x7f", "é ü 日本 🙂", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", "\xed\xa0\x80"}
	floats := []float64{0, math.Copysign(0, -1), 1, -1, 0.9998071789741516, 1.9282e-4, 1e-6, 9.99e-7, 1e-7, 5e-324,
		1e20, 1e21, 123456789012345678, math.MaxFloat64, -math.SmallestNonzeroFloat64, 0.1, 1.5e-10, -3.25e22}
	var labels []runtimeapi.Label
	for i, s := range odd {
		labels = append(labels, runtimeapi.Label{Label: s, Score: floats[i%len(floats)]})
	}
	var ents []entity
	for i, s := range odd {
		ents = append(ents, entity{Text: s, Type: odd[(i+3)%len(odd)], Start: i - 1, End: 1 << (i * 3), Score: floats[(i+5)%len(floats)]})
	}
	answers := []any{
		labelsAnswer{ScoredLabels: labels}, labelsAnswer{ScoredLabels: []runtimeapi.Label{}}, labelsAnswer{}, entitiesAnswer{},
		entitiesAnswer{Entities: ents}, entitiesAnswer{Entities: []entity{}},
		embeddingsAnswer{Embeddings: [][]float64{floats}}, embeddingsAnswer{Embeddings: [][]float64{{}}},
		embeddingsAnswer{Embeddings: [][]float64{nil, floats[:2]}}, embeddingsAnswer{},
	}
	for i, a := range answers {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(a); err != nil {
			t.Fatal(err)
		}
		if got := appendAnswers(nil, []any{a}, true); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("answer %d:\n got %s\nwant %s", i, got, want.Bytes())
		}
	}
	// the batched form
	var want bytes.Buffer
	json.NewEncoder(&want).Encode(struct {
		Results []any `json:"results"`
	}{answers})
	if got := appendAnswers(nil, answers, false); !bytes.Equal(got, want.Bytes()) {
		t.Errorf("batched answer:\n got %s\nwant %s", got, want.Bytes())
	}
	// the runtime request, with and without parameters
	for _, c := range []struct {
		texts  []string
		params json.RawMessage
	}{{odd, nil}, {[]string{"a"}, json.RawMessage(`{ "top_k" : 2 }`)}} {
		want, _ := json.Marshal(runtimeapi.PredictRequest{Texts: c.texts, Parameters: c.params})
		if got := appendRuntimeRequest(nil, c.texts, c.params); !bytes.Equal(got, want) {
			t.Errorf("runtime request:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("hello <world> & \u2028", 0.25)
	f.Add("\xff\x00\"\\", 1e-9)
	f.Fuzz(func(t *testing.T, s string, x float64) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("string %q:\n got %s\nwant %s", s, got, want)
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return
		}
		want, _ = json.Marshal(x)
		if got := appendJSONFloat(nil, x); !bytes.Equal(got, want) {
			t.Fatalf("float %v: got %s, want %s", x, got, want)
		}
	})
}

// Where decodeSimple takes a body, encoding/json reads the same texts from it.
func TestDecodeSimple(t *testing.T) {
	for _, c := range []struct {
		body   string
		texts  []string
		single bool
		ok     bool
	}{
		{`{"text":"hello"}`, []string{"hello"}, true, true},
		{" {\n\t\"texts\" : [ \"a\" , \"b é\" ] } \n", []string{"a", "b é"}, false, true},
		{`{"text":"with \"escape\""}`, nil, false, false},
		{`{"texts":[]}`, nil, false, false},
		{`{"text":"a","parameters":{}}`, nil, false, false},
		{`{"Text":"a"}`, nil, false, false},
		{`{"text":"a"} x`, nil, false, false},
		{`{"text":"a"`, nil, false, false},
		{"{\"text\":\"\xff\"}", nil, false, false},
		{"{\"text\":\"a\x01\"}", nil, false, false},
		{`{"texts":["a",]}`, nil, false, false},
		{`{"texts":["a" "b"]}`, nil, false, false},
		{`{"text":1}`, nil, false, false},
	} {
		texts, single, ok := decodeSimple([]byte(c.body))
		if ok != c.ok || single != c.single || !slices.Equal(texts, c.texts) {
			t.Errorf("%q: got %q %v %v, want %q %v %v", c.body, texts, single, ok, c.texts, c.single, c.ok)
		}
		if ok {
			checkSimpleAgainstGeneral(t, []byte(c.body), texts, single)
		}
	}
}

func FuzzDecodeSimple(f *testing.F) {
	for _, s := range []string{`{"text":"hello"}`, `{"texts":["a","b"]}`, ` { "texts" : [ "x" ] } `, `{"text":"a\"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if texts, single, ok := decodeSimple(body); ok {
			checkSimpleAgainstGeneral(t, body, texts, single)
		}
	})
}

func checkSimpleAgainstGeneral(t *testing.T, body []byte, texts []string, single bool) {
	t.Helper()
	gt, gs, gp, err := decodeGeneral(body)
	if err != nil || gs != single || gp != nil || !slices.Equal(gt, texts) {
		t.Fatalf("%q: decodeSimple %q single=%v; encoding/json %q single=%v params=%s err=%v", body, texts, single, gt, gs, gp, err)
	}
}

func TestDecodeLabelsSimple(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"model":"m","task":"text-classification","outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]]}`, true},
		{" {\"outputs\" : [ [ { \"score\" : -1.5e-7 , \"label\" : \"a b\" } ] , [ ] ] } ", true},
		{`{"outputs":[]}`, true},
		{`{"outputs":[[{"label":"x","score":1}]],}`, false},
		{`{"outputs":[[{"label":"x","score":1},]]}`, false},
		{`{"outputs":[[{"label":"x","score":1}],]}`, false},
		{`{"outputs":[[{"label":"x","score":01}]]}`, false},
		{`{"outputs":[[{"label":"x","score":1.}]]}`, false},
		{`{"outputs":[[{"label":"x","score":.5}]]}`, false},
		{`{"outputs":[[{"label":"x","score":+1}]]}`, false},
		{`{"outputs":[[{"label":"x","score":1e}]]}`, false},
		{`{"outputs":[[{"label":"x","score":1,"extra":2}]]}`, false},
		{`{"outputs":[[{"label":"x","label":"y","score":1}]]}`, false},
		{`{"outputs":[[{"label":"x"}]]}`, false},
		{`{"outputs":[[{"label":"\u0041","score":1}]]}`, false},
		{`{"Outputs":[[{"label":"x","score":1}]]}`, false},
		{`{"outputs":[[]],"outputs":[[]]}`, false},
		{`{"model":"m"}`, false},
		{`{}`, false},
		{`{"outputs":null}`, false},
		{`{"outputs":[[{"label":"x","score":1}]]} x`, false},
	} {
		outs, ok := decodeLabelsSimple([]byte(c.body))
		if ok != c.ok {
			t.Errorf("%s: ok=%v, want %v", c.body, ok, c.ok)
		}
		if ok {
			checkLabelsAgainstEncodingJSON(t, []byte(c.body), outs)
		}
	}
}

func FuzzDecodeLabelsSimple(f *testing.F) {
	f.Add([]byte(`{"model":"m","task":"text-classification","outputs":[[{"label":"POSITIVE","score":0.9},{"label":"NEGATIVE","score":0.1}]]}`))
	f.Add([]byte(`{"outputs":[[{"score":1e-9,"label":"x"}],[]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if outs, ok := decodeLabelsSimple(body); ok {
			checkLabelsAgainstEncodingJSON(t, body, outs)
		}
	})
}

func checkLabelsAgainstEncodingJSON(t *testing.T, body []byte, outs [][]runtimeapi.Label) {
	t.Helper()
	var rr struct {
		Outputs [][]runtimeapi.Label `json:"outputs"`
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		t.Fatalf("%q: decodeLabelsSimple took it, encoding/json: %v", body, err)
	}
	if len(rr.Outputs) != len(outs) {
		t.Fatalf("%q: %d outputs, encoding/json %d", body, len(outs), len(rr.Outputs))
	}
	for i := range outs {
		if !slices.Equal(outs[i], rr.Outputs[i]) || outs[i] == nil {
			t.Fatalf("%q: output %d is %v, encoding/json %v", body, i, outs[i], rr.Outputs[i])
		}
	}
}

// TestDecodeReplicaJSONMalformedSequence: a sequence of malformed replica
// answers (keys ending in a dangling escape, goccy/go-json issue 604) after
// a large valid one made goccy's pooled decoder panic on a later call
// (found by FuzzAgreement in CI). Every call answers: the valid ones decode
// as encoding/json decodes them, the malformed ones are errors.
func TestDecodeReplicaJSONMalformedSequence(t *testing.T) {
	big := `{"outputs":[[{"entity_group":"PER","start":0,"end":3,"word":"` + strings.Repeat("x", 200) + `"}]]}`
	inputs := []string{big, `{"\00\`, `{"\`, `{"outputs":[[{"\`, `{"data":[{"\`, `{"data":[{"index":0,"embedding":[1]}]}`}
	for round := 0; round < 200; round++ {
		for _, in := range inputs {
			var got, want struct {
				Outputs [][]runtimeapi.Entity `json:"outputs"`
				Data    []struct {
					Index     *int      `json:"index"`
					Embedding []float64 `json:"embedding"`
				} `json:"data"`
			}
			err := decodeReplicaJSON([]byte(in), &got)
			wantErr := json.Unmarshal([]byte(in), &want)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("%q: error %v, encoding/json's %v", in, err, wantErr)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: decoded %+v, encoding/json %+v", in, got, want)
			}
		}
	}
}

// BenchmarkDecodeReplicaAnswer: the replica answer's decoders side by side
// on a token-classification answer of 8 texts: encoding/json, goccy alone
// (unsafe on malformed answers), and goccy behind the validity check that
// the gateway uses.
func BenchmarkDecodeReplicaAnswer(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"outputs":[`)
	for i := 0; i < 8; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`[{"entity_group":"PER","score":0.998,"word":"Wolfgang","start":11,"end":19},{"entity_group":"LOC","score":0.9991,"word":"Berlin","start":34,"end":40}]`)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	type answer struct {
		Outputs [][]runtimeapi.Entity `json:"outputs"`
	}
	for _, c := range []struct {
		name   string
		decode func([]byte, any) error
	}{
		{"encoding-json", json.Unmarshal},
		{"goccy", gojson.Unmarshal},
		{"valid+goccy", decodeReplicaJSON},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var a answer
				if err := c.decode(body, &a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
