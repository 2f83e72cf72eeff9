// Package llamaimage holds the test of the generation runtime's CPU image
// (nlpswarm-llama, issue 15; built by build.sh beside it): that Debian sid's
// llama-server in it loads a GGUF model the backoffice's check accepts
// (modelmgr/ggufcheck, on ggufgen's tiny random-weight llama), answers the
// OpenAI-compatible routes, streams Server-Sent Events, is deterministic at
// temperature 0, honours max_tokens, and that the image has no shell; and
// that its answers equal transformers' on the same weights (parity_test.go
// against parity/testdata/reference.json, which parity/run.sh writes with
// Debian sid's transformers): greedy token ids and text, the tokenizer and
// the chat template, stop sequences, max_tokens, seeded sampling, and the
// embeddings mode's pooled vectors. It owns no code a role imports.
package llamaimage
