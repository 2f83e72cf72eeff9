// Package models is the runtime inside every model service: it loads one
// Hugging Face model exported to ONNX (hugot's pure-Go backend), answers with
// the output shapes of the transformers pipelines, batches concurrent
// requests, and serves /predict and the Open Inference Protocol v2 (the wire
// format and the meaning of its statuses are internal/runtimeapi's). It can
// fetch its artifact by digest from the model manager into a cache that
// replicas on one node share, and records its cold start (internal/coldstart).
// It knows nothing of
// Postgres, Swarm, API keys or the gateway.
package models
