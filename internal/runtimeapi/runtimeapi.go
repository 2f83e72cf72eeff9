package runtimeapi

import (
	"encoding/json"
	"net/http"
)

// Tasks a runtime serves, named as the transformers pipelines.
const (
	TextClassification  = "text-classification"
	TokenClassification = "token-classification"
	FeatureExtraction   = "feature-extraction"
)

// Routes of a runtime (besides the rest of Open Inference Protocol v2).
const (
	PathPredict = "/predict"         // POST PredictRequest → PredictResponse
	PathReady   = "/v2/health/ready" // GET: 200 when the runtime takes requests
)

// Background work (issue 20): a job's texts are sent to
// PathPredictBackground, PathPredict with the query priority=background.
// The runtime runs such a request only while no interactive request
// waits, in small parts, never in one pipeline call with interactive
// texts, so an interactive request waits at most for one small part. A
// runtime older than this ignores the query and treats the request as
// interactive (no failure during a rolling upgrade).
const (
	QueryPriority         = "priority"
	PriorityBackground    = "background"
	PathPredictBackground = PathPredict + "?" + QueryPriority + "=" + PriorityBackground
)

// InferPath is the Open Inference Protocol v2 infer route of model.
func InferPath(model string) string { return "/v2/models/" + model + "/infer" }

// PredictRequest is the body of POST /predict.
type PredictRequest struct {
	Texts      []string        `json:"texts"`
	Parameters json.RawMessage `json:"parameters,omitempty"` // an object; its fields depend on the task
}

// PredictResponse is the answer to POST /predict: one output per text, in
// order; each output is the task's type ([]Label, []Entity or Embedding).
type PredictResponse struct {
	Model   string `json:"model"`
	Task    string `json:"task"`
	Outputs []any  `json:"outputs"`
}

// Label is one class with its probability (text-classification: one output
// is a []Label, highest score first).
type Label struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
}

// Entity is a token-classification item, as transformers gives it:
// entity_group for aggregated strategies, entity and index for "none" (one
// output is a []Entity).
type Entity struct {
	EntityGroup string  `json:"entity_group,omitempty"`
	Entity      string  `json:"entity,omitempty"`
	Score       float64 `json:"score"`
	Index       *int    `json:"index,omitempty"`
	Word        string  `json:"word"`
	Start       int     `json:"start"`
	End         int     `json:"end"`
}

// EmbeddingOf is a feature-extraction output. The runtime computes float32
// (Embedding); a reader may decode into float64 to keep the written digits.
type EmbeddingOf[T float32 | float64] struct {
	Embedding []T `json:"embedding"`
}

// Embedding is the runtime's feature-extraction output.
type Embedding = EmbeddingOf[float32]

// What a runtime's answer status means to its caller. Errors carry the
// house body {"error":{"code","message"}}.
//
//   - 200: the outputs.
//   - 429 overloaded (StatusOverloaded, CodeOverloaded) with Retry-After: the
//     runtime is healthy but its queue is full. The caller may try another
//     replica or back off; it is no sign of a broken replica and must never
//     count toward ejecting it.
//   - 503 not_ready (StatusNotReady, CodeNotReady) with Retry-After: the
//     runtime is loading or draining; another replica may take the request,
//     and repeated 503s mean the replica is out of service.
//   - 504 timeout: inference did not finish within the runtime's deadline.
//   - 401 unauthorized (StatusRefused): the request lacked the model's call
//     credential (internal/artifactcred.Call, sent as bearer token), which
//     a runtime started with one requires on its inference and metadata
//     routes (not on its health routes). From a gateway it means the
//     gateway's secret is not the one the replica's credential was derived
//     from (a misconfiguration, or a rotation in progress): the platform's
//     fault, never the customer's, and no sign that the replica is broken.
//   - other 4xx: the request itself (texts, parameters) was refused; sending
//     it elsewhere gives the same answer.
const (
	StatusOverloaded = http.StatusTooManyRequests
	CodeOverloaded   = "overloaded"
	StatusNotReady   = http.StatusServiceUnavailable
	CodeNotReady     = "not_ready"
	// RetryAfterSeconds is the Retry-After a runtime sends with 429 and 503.
	RetryAfterSeconds = 1
	StatusRefused     = http.StatusUnauthorized
)

// Outcome is what a caller does with a runtime's answer.
type Outcome int

const (
	// Answered: the answer is the runtime's word on the request (200, a
	// refusal of the input); the replica is healthy.
	Answered Outcome = iota
	// Busy: the replica is healthy and full; try another or back off, and
	// do not hold it against the replica.
	Busy
	// NotReady: the replica does not take requests; try another, and count
	// it against the replica.
	NotReady
	// Faulty: an answer (relayed as it is), but a sign that the replica is
	// failing (502, 504, a 5xx of a proxy in between): count it against the
	// replica.
	Faulty
	// Refused: the replica refused the caller's call credential; never
	// relay it as the customer's 401. Another replica may accept it (a
	// rotation in progress); do not count it against the replica, which
	// is healthy.
	Refused
)

// Judge classifies a runtime answer's status.
func Judge(status int) Outcome {
	switch {
	case status == StatusOverloaded:
		return Busy
	case status == StatusNotReady:
		return NotReady
	case status == StatusRefused:
		return Refused
	case status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return Faulty
	}
	return Answered
}
