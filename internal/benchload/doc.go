// Package benchload is the closed-loop HTTP load the benchmarks that
// compare latency side by side share (the runtime's background lane, the
// gateway's jobs beside interactive traffic): a few clients, each sending
// one request, reading the answer to the end and pausing, for a while; and
// the quantiles of what they measured (also the llama image's batching
// benchmark's). Benchmarks and tests only; it owns
// no contract and touches no role.
package benchload
