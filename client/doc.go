// Package client is the Go client of nlpswarm's customer API (the gateway):
// one typed call per task (sentiment, classification, entities,
// embeddings), single texts and batches, text generation and chat on
// generation models (NLP Cloud's shapes: Generate, Chatbot; OpenAI's routes
// are for OpenAI's SDK), the Open Inference Protocol v2 infer route, retries with backoff on 429 and 503 that honour Retry-After,
// the caller's context deadline on every wait, asynchronous jobs (jobs.go:
// CreateJob, WaitJob, JobResults paging the JSONL results, CancelJob,
// WebhookSecret and VerifyWebhook for the receiver), and errors (*Error) carrying
// the API's error code, status and request ID.
//
// The request and answer types are the gateway's own (internal/customerapi,
// re-exported here as aliases): the contract is written once. The codes an
// Error may carry are listed with their meaning in the gateway's reference
// (GET /docs, GET /openapi.yaml).
//
// It owns the HTTP calls to the customer API only: it imports no role and
// nothing but the standard library and the contract packages, so that a
// customer's program pulls in nothing else.
package client
