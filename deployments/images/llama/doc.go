// Package llamaimage holds the test of the generation runtime's CPU image
// (nlpswarm-llama, issue 15; built by build.sh beside it): that Debian sid's
// llama-server in it loads a GGUF model the backoffice's check accepts
// (modelmgr/ggufcheck, on ggufgen's tiny random-weight llama), answers the
// OpenAI-compatible routes, streams Server-Sent Events, is deterministic at
// temperature 0, honours max_tokens, and that the image has no shell. It
// owns no code a role imports.
package llamaimage
