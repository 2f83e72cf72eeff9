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

// Text generation (issue 15): GGUF models of runtime task TextGeneration,
// called through NLP-Cloud-style task routes (POST /v1/{model}/generation
// and /v1/{model}/chatbot) or the OpenAI-compatible routes below, whose
// bodies name the model.

// TextGeneration is the task of generation models (modelmgr's, a runtime
// task like runtimeapi's).
const TextGeneration = "text-generation"

// The NLP-Cloud-style tasks of generation models.
const (
	TaskGeneration = "generation"
	TaskChatbot    = "chatbot"
)

// The OpenAI-compatible routes: the gateway relays the first three to a
// replica of the model the body names (the replica serves the same paths)
// and answers the last itself.
const (
	PathChatCompletions = "/v1/chat/completions"
	PathCompletions     = "/v1/completions"
	PathEmbeddings      = "/v1/embeddings"
	PathModels          = "/v1/models"
)

// GenerationRequest is the body of POST /v1/{model}/generation, NLP Cloud's
// shape: Text is the prompt; MaxLength the most tokens generated (default
// DefaultMaxLength); EndSequence stops the generation where it appears (it
// is not part of the answer); RemoveInput leaves the prompt out of the
// answer's generated_text (by default the answer starts with it). Stream
// asks for the answer as Server-Sent Events (GenerationChunk events, then
// the whole GenerationAnswer, then "[DONE]").
type GenerationRequest struct {
	Text              string   `json:"text"`
	MaxLength         *int     `json:"max_length,omitempty"`
	EndSequence       string   `json:"end_sequence,omitempty"`
	RemoveInput       bool     `json:"remove_input,omitempty"`
	Temperature       *float64 `json:"temperature,omitempty"`
	TopP              *float64 `json:"top_p,omitempty"`
	TopK              *int     `json:"top_k,omitempty"`
	RepetitionPenalty *float64 `json:"repetition_penalty,omitempty"`
	Seed              *int64   `json:"seed,omitempty"`
	Stream            bool     `json:"stream,omitempty"`
}

// GenerationChunk is one event of a streamed generation: the next piece
// of the continuation, as the replica generates it. The pieces never
// include the prompt; the stream's last event before "data: [DONE]" is
// the whole GenerationAnswer, the answer a request without stream gets.
type GenerationChunk struct {
	GeneratedText string `json:"generated_text"`
}

// ChatbotChunk is one event of a streamed chatbot answer: the next piece
// of the response; the last event before "data: [DONE]" is the whole
// ChatbotAnswer (its history included).
type ChatbotChunk struct {
	Response string `json:"response"`
}

// DefaultMaxLength is the tokens generated when a generation or chatbot
// request gives no max_length.
const DefaultMaxLength = 50

// GenerationAnswer is the answer of generation: the text (the prompt and
// its continuation, or the continuation alone with remove_input) and the
// tokens counted.
type GenerationAnswer struct {
	GeneratedText     string `json:"generated_text"`
	NbGeneratedTokens int64  `json:"nb_generated_tokens"`
	NbInputTokens     int64  `json:"nb_input_tokens"`
}

// Exchange is one turn of a chatbot conversation.
type Exchange struct {
	Input    string `json:"input"`
	Response string `json:"response"`
}

// ChatbotRequest is the body of POST /v1/{model}/chatbot, NLP Cloud's
// shape: Input is the user's new message, Context an optional description
// of the conversation (the system message), History the turns so far,
// oldest first. MaxLength, Temperature and Stream are as for generation.
type ChatbotRequest struct {
	Input       string     `json:"input"`
	Context     string     `json:"context,omitempty"`
	History     []Exchange `json:"history,omitempty"`
	MaxLength   *int       `json:"max_length,omitempty"`
	Temperature *float64   `json:"temperature,omitempty"`
	Seed        *int64     `json:"seed,omitempty"`
	Stream      bool       `json:"stream,omitempty"`
}

// ChatbotAnswer is the answer of chatbot: the response and the history
// with this turn appended, for the next request.
type ChatbotAnswer struct {
	Response string     `json:"response"`
	History  []Exchange `json:"history"`
}

// Usage is the token count of an OpenAI-compatible answer (its usage
// object, in a stream's last event).
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// ModelList is the answer of GET /v1/models: the generation models the
// key may call.
type ModelList struct {
	Object string      `json:"object"` // "list"
	Data   []ModelInfo `json:"data"`
}

// ModelInfo is one model of ModelList.
type ModelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}
