// Package generation is the generation runtime (issue 15): one replica of
// one GGUF model, served by a llama-server child process (Debian's
// llama.cpp, in the nlpswarm-llama image) under the platform's usual
// contract. It owns the child's lifecycle (start, health, exit, drain),
// the OpenAI-compatible routes it relays to the child (call credential
// required, Server-Sent Events passed on as they come, a client that leaves
// cancels the generation), the OIP health routes, and the generation
// metrics: prompt and completion tokens, time to first token, requests in
// flight and their outcome. In embeddings mode (Config.Embeddings, for an
// embedding GGUF of task feature-extraction) the child runs with
// --embeddings and the model's own pooling, and only /v1/embeddings is
// relayed.
// The child's slots (--parallel), context, threads
// and the layers it offloads to the GPUs it sees (Config.GPULayers,
// --n-gpu-layers: 0 on CPUs, all of them on a GPU deployment, which the
// scheduler runs on the CUDA image) come from the role's flags.
//
// It must not touch the model manager, the scheduler or the gateway; it
// reads the model with models.Fetch (the artifact contract every runtime
// shares) and checks it with modelmgr/ggufcheck before the child sees it.
package generation
