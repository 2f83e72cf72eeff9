// Package bench holds the whole-stack benchmarks of issue 14: requests/s,
// p50 and p99 through the gateway to one runtime replica of the MiniLM-sized
// encoder (make minilm), its replica on ONNX Runtime and on pure Go,
// alternated round by round. It holds no runtime code.
//
//   - stack.sh (make bench-stack): the real stack (make up ORT=1), the model
//     pushed as an archive and deployed with one replica per engine, wrk
//     driving the gateway's published port (embed.lua).
//   - BenchmarkStackInProcess (stack_test.go): the same path in one process,
//     for a machine where the Docker engine is busy: a real gateway
//     (gateway.New, its key check on a throwaway Postgres database) in front
//     of real runtimes (models.Server, its batcher, the model loaded on each
//     engine) over loopback HTTP; no Swarm, overlay network or container
//     limits. Built with -tags ORT and run in the nlpswarm-ort image for
//     both engines (see its comment).
package bench
