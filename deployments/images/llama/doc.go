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
// embeddings mode's pooled vectors.// and the test of its CUDA variant (nlpswarm-llama-cuda, build.sh with CUDA=1,
// `make test-llama-cuda`, no GPU needed): ggml's CUDA backend and CUDA 12.4
// runtime present, the closure complete but for the node's libcuda.so.1,
// no driver library, llama-server listing its devices, and the generate
// role with every layer asked on the GPU serving on the CPU. It owns no
// code a role imports.
package llamaimage
