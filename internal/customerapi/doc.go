// Package customerapi is the wire contract between the gateway (gateway/,
// the server) and its customers (client/, the Go client; the Python client
// in clients/python follows the same JSON): the task names of
// POST /v1/{model}/{task} and the runtime task each maps to, the request
// body, and each task's answer; for generation models (issue 15) the
// NLP-Cloud-style generation and chatbot bodies and answers, the
// OpenAI-compatible routes, their usage object and the model list. Both
// sides import it, so the format is written once; the OpenAPI document the
// gateway serves (gateway/openapi.yaml) describes the same shapes, and the
// gateway's tests check its answers against that document.
//
// It holds types, constants and pure functions only: no HTTP, no role's
// internals; it imports runtimeapi for the label type the runtime and the
// customer share.
package customerapi
