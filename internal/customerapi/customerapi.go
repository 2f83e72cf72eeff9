package customerapi

import (
	"encoding/json"
	"net/url"

	"github.com/nlpswarm/nlpswarm/internal/runtimeapi"
)

// Tasks of the customer API (the {task} of POST /v1/{model}/{task}).
const (
	TaskSentiment      = "sentiment"
	TaskClassification = "classification"
	TaskEntities       = "entities"
	TaskEmbeddings     = "embeddings"
)

// RuntimeTask is the runtime task (runtimeapi) each customer task runs on:
// a model serves the customer tasks whose runtime task is its own.
var RuntimeTask = map[string]string{
	TaskSentiment:      runtimeapi.TextClassification,
	TaskClassification: runtimeapi.TextClassification,
	TaskEntities:       runtimeapi.TokenClassification,
	TaskEmbeddings:     runtimeapi.FeatureExtraction,
}

// TaskPath is the route of task on model: /v1/{model}/{task}, each name
// escaped as one path segment.
func TaskPath(model, task string) string {
	return "/v1/" + url.PathEscape(model) + "/" + url.PathEscape(task)
}

// InferPath is the Open Inference Protocol v2 infer route of model, which
// the gateway passes through to a replica.
func InferPath(model string) string { return runtimeapi.InferPath(url.PathEscape(model)) }

// Request is the body of POST /v1/{model}/{task}: either Text (the answer
// is one task answer) or Texts (the answer is {"results": [...]}, one per
// text, in order), with optional Parameters (an object the model's runtime
// reads; its fields depend on the task).
type Request struct {
	Text       *string         `json:"text,omitempty"`
	Texts      []string        `json:"texts,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// Label is one class with its probability, highest first.
type Label = runtimeapi.Label

// LabelsAnswer is the answer of sentiment and classification for one text.
type LabelsAnswer struct {
	ScoredLabels []Label `json:"scored_labels"`
}

// Entity is one named entity found in a text: its words, its type (PER,
// LOC, ...), its character offsets in the text and its score.
type Entity struct {
	Text  string  `json:"text"`
	Type  string  `json:"type"`
	Start int     `json:"start"`
	End   int     `json:"end"`
	Score float64 `json:"score"`
}

// EntitiesAnswer is the answer of entities for one text.
type EntitiesAnswer struct {
	Entities []Entity `json:"entities"`
}

// EmbeddingsAnswer is the answer of embeddings for one text: one vector
// (a list of one, so that a model giving several per text fits the shape).
type EmbeddingsAnswer struct {
	Embeddings [][]float64 `json:"embeddings"`
}

// Results is the answer to a request with "texts": one answer per text.
type Results[A any] struct {
	Results []A `json:"results"`
}
