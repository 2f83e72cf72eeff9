package models

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func fixture(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join("..", "..", "shared", "fixtures", "nlp", name)
	if _, err := os.Stat(d); err != nil {
		t.Skipf("fixture %s absent (%v)", d, err)
	}
	return d
}

type reference struct {
	Sentiment []struct {
		Input  string  `json:"input"`
		Output []Label `json:"output"`
	} `json:"sentiment"`
	NERSimple []struct {
		Input  string   `json:"input"`
		Output []Entity `json:"output"`
	} `json:"ner_simple"`
	NERNone []struct {
		Input  string   `json:"input"`
		Output []Entity `json:"output"`
	} `json:"ner_none"`
	Mean []struct {
		Input     string    `json:"input"`
		Embedding []float64 `json:"embedding"`
	} `json:"embeddings_mean_pooled"`
	MeanNorm []struct {
		Input     string    `json:"input"`
		Embedding []float64 `json:"embedding"`
	} `json:"embeddings_mean_pooled_normalized"`
}

func loadReference(t testing.TB) reference {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(fixture(t, "sentiment")), "reference_outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

const tol = 1e-4

// The reference is Hugging Face: labels, groups, words and offsets exactly,
// scores and vectors within 1e-4. Inputs run as one batch, as the batcher does.
func TestParity(t *testing.T) {
	testParity(t, EngineConfig{Backend: BackendGo})
}

// testParity checks every fixture on the engine eng.
func testParity(t *testing.T, eng EngineConfig) {
	ref := loadReference(t)
	ctx := context.Background()
	maxDiff := map[string]float64{}
	diff := func(name string, a, b float64) {
		d := math.Abs(a - b)
		maxDiff[name] = math.Max(maxDiff[name], d)
		if d > tol {
			t.Errorf("%s: %v vs reference %v", name, a, b)
		}
	}

	m, err := LoadWith(fixture(t, "sentiment"), "sentiment", TextClassification, eng)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, r := range ref.Sentiment {
		texts = append(texts, r.Input)
	}
	out, err := m.Predict(ctx, texts, Params{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range ref.Sentiment {
		got := out[i].([]Label)
		if len(got) != len(r.Output) {
			t.Fatalf("%q: %v vs %v", r.Input, got, r.Output)
		}
		for k := range got {
			if got[k].Label != r.Output[k].Label {
				t.Errorf("%q: labels %v vs %v", r.Input, got, r.Output)
			}
			diff("sentiment", got[k].Score, r.Output[k].Score)
		}
	}
	m.Close()

	m, err = LoadWith(fixture(t, "ner"), "ner", TokenClassification, eng)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		strategy string
		cases    []struct {
			Input  string   `json:"input"`
			Output []Entity `json:"output"`
		}
	}{{"simple", ref.NERSimple}, {"none", ref.NERNone}} {
		texts = texts[:0]
		for _, r := range c.cases {
			texts = append(texts, r.Input)
		}
		p := Params{AggregationStrategy: c.strategy}
		out, err := m.Predict(ctx, texts, p)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range c.cases {
			got := out[i].([]Entity)
			if len(got) != len(r.Output) {
				t.Fatalf("%s %q: %+v vs %+v", c.strategy, r.Input, got, r.Output)
			}
			for k, w := range r.Output {
				g := got[k]
				if g.EntityGroup != w.EntityGroup || g.Entity != w.Entity || g.Word != w.Word || g.Start != w.Start || g.End != w.End ||
					(w.Index != nil && (g.Index == nil || *g.Index != *w.Index)) {
					t.Errorf("%s %q: %+v vs %+v", c.strategy, r.Input, g, w)
				}
				diff("ner_"+c.strategy, g.Score, w.Score)
			}
		}
	}
	m.Close()

	m, err = LoadWith(fixture(t, "embeddings"), "embeddings", FeatureExtraction, eng)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		normalize bool
		cases     []struct {
			Input     string    `json:"input"`
			Embedding []float64 `json:"embedding"`
		}
	}{{false, ref.Mean}, {true, ref.MeanNorm}} {
		texts = texts[:0]
		for _, r := range c.cases {
			texts = append(texts, r.Input)
		}
		n := c.normalize
		out, err := m.Predict(ctx, texts, Params{Pooling: "mean", Normalize: &n})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range c.cases {
			got := out[i].(Embedding).Embedding
			if len(got) != len(r.Embedding) {
				t.Fatalf("dims %d vs %d", len(got), len(r.Embedding))
			}
			for k := range got {
				diff("embeddings", float64(got[k]), r.Embedding[k])
			}
		}
	}
	m.Close()
	if m.Backend != eng.Backend {
		t.Errorf("ran on %s, asked for %s", m.Backend, eng.Backend)
	}
	t.Logf("%s: max abs diff vs transformers: %v", eng.Backend, maxDiff)
}
