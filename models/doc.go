// Package models is the runtime inside every model service: it loads one
// Hugging Face model exported to ONNX, answers with the output shapes of the
// transformers pipelines, batches concurrent requests, and serves /predict
// and the Open Inference Protocol v2 (the wire format and the meaning of its
// statuses are internal/runtimeapi's). It can fetch its artifact by digest
// from the model manager (with the per-digest bearer credential the
// scheduler put in its arguments, internal/artifactcred) into a cache that
// replicas on one node share, and
// records its cold start (internal/coldstart). It knows nothing of Postgres,
// Swarm, API keys or the gateway.
//
// # Engines
//
// The pipelines are hugot's; the engine under them is a Backend
// (backend.go), chosen per process by EngineConfig (auto, ort or go):
//
//   - go: hugot's pure-Go backend (GoMLX). No C library: the static
//     control-plane binary and `CGO_ENABLED=0` builds have only this one.
//   - ort: ONNX Runtime through hugot's ORT backend, compiled only with the
//     build tag ORT (backend_ort.go). onnxruntime_go dlopens the library at
//     run time; cgo is for its header. auto picks ort when the binary has it
//     and the library loads, else go.
//
// Choices for ort, and why:
//
//   - ORT 1.23 from Debian sid (libonnxruntime1.23), not trixie's 1.21:
//     hugot v0.6.1 needs onnxruntime_go ≥ v1.25 (v1.13, the newest served
//     version that asks for C API ≤ 21, lacks what hugot calls), and v1.25
//     asks for C API 23, which 1.21 refuses ("Error setting ORT API base:
//     2"). Pinning trixie would mean forking onnxruntime_go; mixing trixie
//     with sid's package does not resolve (it needs sid's glibc 2.43). So
//     the image is a sid closure, pinned to the upstream version
//     (ORT_VERSION=1.23.2+dfsg-*) and cached; move to trixie-backports or
//     forky once they carry 1.23.
//   - hugot's ORT tag compiles its Rust-tokenizer path, and libtokenizers
//     cannot be built here. go.mod replaces github.com/daulet/tokenizers with
//     models/ort/notokenizers, a stand-in whose load succeeds and whose every
//     encode panics; Backend.prepare then swaps hugot's pure-Go tokenizer
//     into the loaded model before any text is encoded, so both engines
//     tokenize identically (the parity tests hold both to transformers).
//   - hugot's ORT session is one per process (ORT's environment is global):
//     a runtime serves one model, so that is no limit there. A second ORT
//     load in one process fails, and auto then falls back to go; so
//     TestParityORT runs in a child process of its own, and the whole
//     package's tests pass in the ORT image too.
//   - Intra-op threads come from the CPUs the deployment gives the process
//     (GOMAXPROCS follows the cgroup limit), one inter-op thread, no
//     spinning: ORT's default oversubscribed two cores and lost 2×.
//   - EngineFiles lists what the engines read to load a model beyond its
//     folder (ORT's library and the libraries it links; nothing for go), so
//     that the apiserver's sandboxed validation child can still load it.
//
// # Bounded work per request
//
// What one request may cost the replica's one inference loop is bounded
// before it queues (server.go, prepare.go, batcher.go):
//
//   - per text: MaxChars characters (413 text_too_long); per request:
//     MaxTexts texts (413 too_many_texts), MaxTotalChars characters together
//     (413 request_too_long) and MaxTokens tokens given to the model, each
//     text counted up to max_position_embeddings (413 too_many_tokens). The
//     wire contract of these statuses is internal/runtimeapi's (4xx other
//     than 429/503: the request's own fault, answered as it is).
//   - the handler tokenizes each text on the request's goroutine
//     (Model.Prepare) and cuts it right after the last token the model
//     keeps, checked to encode the same, so the loop's tokenizer reads a
//     few hundred characters of a 16 KB text, not 16 per position.
//   - per batch: MaxSize texts and MaxTokens tokens (BatchConfig); a request
//     over either runs in parts of an eighth of that budget, one part per
//     batch beside the queued small requests, which therefore wait one part,
//     not the whole large request.
//   - background work (/predict?priority=background, runtimeapi's
//     PathPredictBackground: the gateway's job batches) runs in parts of an
//     eighth of a batch, alone, and only while no interactive request
//     waits (Batcher.SubmitBackground), so an interactive text is never
//     batched with a job's and waits at most for one small part; while
//     background work waits, interactive requests are not held for the
//     MaxDelay window either (the model would idle through it).
//   - a pipeline call stops between chunks once every client of its batch
//     has gone (whileWaited), and RequestTimeout bounds the wait.
//
// The nlpswarm-ort image (deployments/images/ort, `make ort-image`) holds
// the cgo binary and the ldd closure of it and libonnxruntime on an empty
// root; `make test-ort` runs the ORT parity test inside it.
package models
