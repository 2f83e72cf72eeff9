package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/knights-analytics/hugot"
	"github.com/knights-analytics/hugot/pipelines"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
	"github.com/nlpswarm/nlpswarm/modelmgr/archive"
)

// Tasks served, named as the transformers pipelines (runtimeapi holds the
// wire contract: these names, the outputs' types, /predict's body).
const (
	TextClassification  = runtimeapi.TextClassification
	TokenClassification = runtimeapi.TokenClassification
	FeatureExtraction   = runtimeapi.FeatureExtraction
)

// The outputs of the tasks, as the wire contract defines them.
type (
	Label     = runtimeapi.Label
	Entity    = runtimeapi.Entity
	Embedding = runtimeapi.Embedding
)

// Model is one loaded model. Predict is not safe for concurrent use: the
// batcher calls it from one goroutine.
type Model struct {
	Name, Task string
	Labels     []string
	Backend    string // the engine that runs it: go or ort
	multiLabel bool
	tmpDir     string
	session    *hugot.Session
	tc         *pipelines.TextClassificationPipeline
	nc         *pipelines.TokenClassificationPipeline
	fe         *pipelines.FeatureExtractionPipeline
	counter    *tokenCounter // tokenizes in the request's goroutine (prepare.go)
	encoded    encodingCache // what counter made, for the loop (encodings.go)
	mu         sync.Mutex
}

// Load loads the model in dir (config.json, tokenizer.json, model.onnx) for
// task on the engine DefaultEngineConfig picks.
func Load(dir, name, task string) (*Model, error) {
	return LoadWith(dir, name, task, DefaultEngineConfig())
}

// LoadWith loads the model in dir for task on the engine eng names; auto
// falls back to go when the ORT library does not load.
func LoadWith(dir, name, task string, eng EngineConfig) (*Model, error) {
	want, err := chooseBackend(eng.Backend, HaveORT)
	if err != nil {
		return nil, err
	}
	// the folder is checked once, whichever engine then loads it
	dir = archive.ModelRoot(dir)
	if err := checkArtifact(dir); err != nil {
		return nil, err
	}
	m, err := load(dir, name, task, want, eng)
	if err != nil && want == BackendORT && (eng.Backend == "" || eng.Backend == BackendAuto) && errors.Is(err, ErrBackendUnavailable) {
		return load(dir, name, task, BackendGo, eng)
	}
	return m, err
}

// load loads the checked model root dir on backend.
func load(dir, name, task, backend string, eng EngineConfig) (*Model, error) {
	m := &Model{Name: name, Task: task, Backend: backend}
	engine := backendByName(backend)
	tmp, labels, problem, err := sanitizedCopy(dir)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	m.tmpDir, m.Labels = tmp, labels
	m.multiLabel = problem == "multi_label_classification"
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	if m.session, err = engine.newSession(eng, tmp); err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	switch task {
	case TextClassification:
		agg := pipelines.WithSoftmax()
		if m.multiLabel {
			agg = pipelines.WithSigmoid()
		}
		m.tc, err = hugot.NewPipeline(m.session, hugot.TextClassificationConfig{ModelPath: tmp, Name: name,
			Options: []hugot.TextClassificationOption{agg, pipelines.WithMultiLabel()}})
	case TokenClassification:
		m.nc, err = hugot.NewPipeline(m.session, hugot.TokenClassificationConfig{ModelPath: tmp, Name: name,
			Options: []hugot.TokenClassificationOption{pipelines.WithSimpleAggregation()}})
	case FeatureExtraction:
		m.fe, err = hugot.NewPipeline(m.session, hugot.FeatureExtractionConfig{ModelPath: tmp, Name: name})
	default:
		return nil, fmt.Errorf("unknown task %q (want %s, %s or %s)", task, TextClassification, TokenClassification, FeatureExtraction)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s for %s: %w", dir, task, err)
	}
	if err := engine.prepare(m.pipelineModel(), tmp); err != nil {
		return nil, fmt.Errorf("load %s on %s: %w", dir, backend, err)
	}
	if m.counter, err = newTokenCounter(tmp, m.pipelineModel().MaxPositionEmbeddings); err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	ok = true
	return m, nil
}

// Close frees the model.
func (m *Model) Close() {
	if m.session != nil {
		m.session.Destroy()
	}
	if m.tmpDir != "" {
		os.RemoveAll(m.tmpDir)
	}
}

// sanitizedCopy makes a folder hugot accepts from what transformers writes:
// config.json without null values (hugot v0.6.1 refuses "eos_token_id":
// null), the other files linked. The user's folder is never modified.
func sanitizedCopy(dir string) (tmp string, labels []string, problem string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return "", nil, "", err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", nil, "", fmt.Errorf("config.json: %w", err)
	}
	for k, v := range cfg {
		if v == nil {
			delete(cfg, k)
		}
	}
	if id2, ok := cfg["id2label"].(map[string]any); ok {
		labels = make([]string, len(id2))
		for k, v := range id2 {
			var i int
			if _, err := fmt.Sscan(k, &i); err == nil && i >= 0 && i < len(labels) {
				labels[i], _ = v.(string)
			}
		}
	}
	problem, _ = cfg["problem_type"].(string)
	tmp, err = os.MkdirTemp("", "nlpswarm-model-*")
	if err != nil {
		return "", nil, "", err
	}
	clean, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), clean, 0o644); err != nil {
		os.RemoveAll(tmp)
		return "", nil, "", err
	}
	for _, f := range []string{"model.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
		src, err := filepath.Abs(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		if _, err := os.Stat(src); err != nil {
			if f == "model.onnx" || f == "tokenizer.json" {
				os.RemoveAll(tmp)
				return "", nil, "", fmt.Errorf("missing %s", f)
			}
			continue
		}
		if err := os.Symlink(src, filepath.Join(tmp, f)); err != nil {
			os.RemoveAll(tmp)
			return "", nil, "", err
		}
	}
	return tmp, labels, problem, nil
}

// Params are the per-request pipeline parameters.
type Params struct {
	TopK                *int   `json:"top_k,omitempty"`
	AggregationStrategy string `json:"aggregation_strategy,omitempty"`
	Pooling             string `json:"pooling,omitempty"`
	Normalize           *bool  `json:"normalize,omitempty"`
}

var strategies = map[string]string{"none": "NONE", "simple": "SIMPLE", "first": "FIRST", "average": "AVERAGE", "max": "MAX"}

// Check validates p for task and fills defaults.
func (p *Params) Check(task string) error {
	switch task {
	case TextClassification:
		if p.TopK != nil && *p.TopK < 1 {
			return errors.New("top_k must be at least 1")
		}
	case TokenClassification:
		if p.AggregationStrategy == "" {
			p.AggregationStrategy = "simple"
		}
		if _, ok := strategies[p.AggregationStrategy]; !ok {
			return fmt.Errorf("aggregation_strategy must be none, simple, first, average or max")
		}
	case FeatureExtraction:
		if p.Pooling == "" {
			p.Pooling = "mean"
		}
		if p.Pooling != "mean" {
			return fmt.Errorf("pooling %q is not served: only mean (attention-masked, as sentence-transformers) is", p.Pooling)
		}
		if p.Normalize == nil {
			t := true
			p.Normalize = &t
		}
	}
	return nil
}

// key groups requests that can share one pipeline call.
func (p Params) key() string {
	return p.AggregationStrategy
}

// Clean makes a text safe for the tokenizer (hugot's Go tokenizer exits the
// process on some encode errors): invalid UTF-8 becomes U+FFFD, control
// characters other than tab and newline become spaces, and NUL is dropped.
func Clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == 0:
			return -1
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case unicode.IsControl(r):
			return ' '
		}
		return r
	}, s)
}

// predictBatch runs the pipeline once on at most maxBatchDefault texts.
func (m *Model) predictBatch(texts []string, p Params) ([]any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]any, len(texts))
	if len(texts) == 0 {
		return out, nil
	}
	// empty texts run too: transformers answers them ([CLS][SEP])
	run := texts
	idx := make([]int, len(texts))
	for i := range idx {
		idx[i] = i
	}
	// the tokens Prepare made, when it made every text's (encodings.go)
	encs := m.encoded.get(run)
	switch m.Task {
	case TextClassification:
		var res *pipelines.TextClassificationOutput
		var err error
		if encs != nil && m.tc.FixedPaddingLength == 0 {
			res, err = runEncoded(m.tc, m.tc.Runtime, run, encs)
		} else {
			res, err = m.tc.RunPipeline(run)
		}
		if err != nil {
			return nil, err
		}
		for j, labels := range res.ClassificationOutputs {
			ls := make([]Label, len(labels))
			for k, l := range labels {
				ls[k] = Label{Label: l.Label, Score: float64(l.Score)}
			}
			sort.SliceStable(ls, func(a, b int) bool { return ls[a].Score > ls[b].Score })
			if p.TopK != nil && *p.TopK < len(ls) {
				ls = ls[:*p.TopK]
			}
			out[idx[j]] = ls
		}
	case TokenClassification:
		m.nc.AggregationStrategy = strategies[p.AggregationStrategy]
		var res *pipelines.TokenClassificationOutput
		var err error
		if encs != nil && !m.nc.SplitWords {
			res, err = runEncoded(m.nc, m.nc.Runtime, run, encs)
		} else {
			res, err = m.nc.RunPipeline(run)
		}
		if err != nil {
			return nil, err
		}
		for j, ents := range res.Entities {
			es := make([]Entity, 0, len(ents))
			for _, e := range ents {
				item := Entity{Score: float64(e.Score), Word: e.Word, Start: int(e.Start), End: int(e.End)}
				if p.AggregationStrategy == "none" {
					i := e.Index
					item.Entity, item.Index = e.Entity, &i
				} else {
					item.EntityGroup = e.Entity
				}
				es = append(es, item)
			}
			out[idx[j]] = es
		}
	case FeatureExtraction:
		var res *pipelines.FeatureExtractionOutput
		var err error
		if encs != nil {
			res, err = runEncoded(m.fe, m.fe.Runtime, run, encs)
		} else {
			res, err = m.fe.RunPipeline(run)
		}
		if err != nil {
			return nil, err
		}
		for j, v := range res.Embeddings {
			if *p.Normalize {
				v = normalized(v)
			}
			out[idx[j]] = Embedding{Embedding: v}
		}
	}
	return out, nil
}

func normalized(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	n := math.Sqrt(sum)
	if n < 1e-12 {
		n = 1e-12
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / n)
	}
	return out
}

// SmokeTest loads the model in dir and runs one inference: the model
// manager calls it on every upload.
func SmokeTest(ctx context.Context, dir, task string) error {
	done := make(chan error, 1)
	go func() {
		m, err := Load(dir, "smoke", task)
		if err != nil {
			done <- err
			return
		}
		defer m.Close()
		p := Params{}
		p.Check(task)
		_, err = m.Predict(ctx, []string{"hello world"}, p)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("smoke test: %w", ctx.Err())
	}
}
