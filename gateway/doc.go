// Package gateway is the customer API: API keys, rate limits and quotas,
// replica discovery, load balancing, retries, timeouts, metrics and usage
// metering in front of the model runtimes. For autoscaling it publishes each
// model's load to Redis and holds requests for a model at zero while a
// replica starts (autoscale.go).
//
// Its parts, one file (or two) each:
//
//   - config.go: Config, the gateway role's whole configuration (cmd embeds
//     it as it is: each field is a flag), checked and defaulted once.
//   - gateway.go: wiring (New, Close) and the background loops (catalogue,
//     LISTEN for deployment changes, discovery, usage flush).
//   - handler.go: the routing table (routes: every customer route, which
//     New registers and nothing else may), the customer routes (task API
//     and v2 pass-through), admission (key, model, limits) and the error
//     answers.
//   - reference.go, openapi.yaml: the customer API reference, one embedded
//     OpenAPI 3 document (routes, bodies, every error code with its
//     meaning in x-error-codes) served as GET /openapi.yaml, /openapi.json
//     and an HTML page at GET /docs. Its tests fail when a route of the
//     table, or an error code the gateway (or a runtime, relayed on v2) can
//     send, is missing from it, and check real answers against its schemas.
//     The wire types themselves are internal/customerapi's, which the Go
//     client (client/) shares; gatewaytest/ starts a real gateway for the
//     clients' tests.
//   - frontend.go: the customer API's HTTP/1.1 server (Config.Frontend):
//     net/http's (the default) or fasthttp's (--frontend=fast), both serving
//     the same http.Handler and both run by every test of the package
//     (TestMain). Issue 22 asked for an event-driven front end from a
//     maintained library, two measured before choosing: fasthttp (one
//     goroutine per connection, no background read, pooled request state)
//     and nbio (an epoll loop handing each parsed request to a pooled
//     goroutine; a benchmark-only prototype, nbio_bench_test.go). gnet and
//     netpoll give bytes, not HTTP: the parser and writer would be ours,
//     against the house rule of a maintained library over hand-written code.
//     fasthttp is the one kept: on one pinned core (BenchmarkPinned,
//     BENCHMARKS.md, three runs) it served 0.58–0.62× nginx's req/s at
//     49–51 µs of CPU per request, nbio 0.34–0.36× at 76–95 µs (each
//     request handed from its event loop to another goroutine), net/http
//     0.46–0.50× at 63–66 µs; and nbio reads each body whole before the
//     handler with no deadline of its own, so the body deadline, the
//     in-flight caps while a body arrives and the smuggling tests would
//     have to be rebuilt around it. fasthttp stays opt-in all the same:
//     about 0.6× is short of the 0.8× issue 22 set for making it the
//     default (about half of a request's CPU is the kernel's, in every
//     front end alike).
//   - stream.go: relayStream, the pass-through's relay of streamed answers
//     (text/event-stream, or without a length) as they arrive, on either
//     front end: a flush per read, an SSE error event when the runtime fails
//     mid-stream, the upstream request ended when the client leaves. A
//     stream counts in flight (the model's load for autoscaling, its
//     replica's count for balancing) until it is closed, not only until its
//     head arrived (proxy.go's onClose). The
//     model's timeout bounds the wait for a stream's head and then each
//     wait for more of it (streamIdle, idleReads in upstream.go, on both
//     upstream clients), never the whole stream: a generation lasts as long
//     as its tokens take.
//   - generation.go: the text-generation routes (issue 15): OpenAI's
//     POST /v1/chat/completions, /v1/completions, /v1/embeddings (the body's
//     "model" picks the deployment, read after the key and before the
//     model's admission; the body goes to the replica as it is) and
//     GET /v1/models (the generation models the key may call); NLP Cloud's
//     POST /v1/{model}/generation and /chatbot, translated to and from the
//     replica's completions and chat, and with "stream": true streamed
//     (nlpstream.go: one event per piece of the answer, then the whole
//     answer, the JSON a request without stream gets, then [DONE]).
//     Streams (relayGeneration) go out
//     event by event as they arrive, each read's complete events flushed at
//     once: the gateway asks the replica for its usage event
//     (stream_options.include_usage) and keeps it from a client that did
//     not ask; the replica failing mid-stream ends the stream with
//     data: {"error":{...}}, OpenAI's in-band error; the client leaving ends
//     the replica's request. Tokens (the answer's usage object, else a cut
//     stream's content events) go to usage and to the token budgets. An
//     embedding GGUF (task feature-extraction, Model.GGUF from the
//     deployment's format) is served by the same runtime in embeddings
//     mode: /v1/embeddings relays to it, and its task route
//     POST /v1/{model}/embeddings (serveGGUFEmbeddings) translates the
//     texts to the replica's /v1/embeddings and its answer back to the
//     encoder's shape, input tokens metered; an ONNX encoder keeps /predict.
//   - tokenlimit.go: a plan's token budgets (tokens per minute, per UTC
//     month): counts in Redis under internal/limitkeys' names, read at
//     admission (one round trip, only for plans that have them), charged
//     when the usage is known; a month's count Redis lost is seeded from
//     usage, Redis failing fails open. 429 token_rate_limited or
//     token_quota_exceeded with Retry-After.
//   - gatewaytest/fakellama: a fake generation replica (llama-server's
//     JSON and event streams) for the package's tests, gatewaytest's (the
//     OpenAI SDK test) and BenchmarkGenerationRelay.
//   - request.go, taskjson.go: the customer's JSON and its translation from
//     and to the runtime's (the wire contract is internal/runtimeapi).
//   - proxy.go: forward, the retry on another replica and what each runtime
//     answer counts for (runtimeapi.Judge: a full queue, 429, never counts
//     toward ejection; 503 not ready does).
//   - upstream.go, upstream_conn.go: the HTTP client to the replicas behind
//     one interface: the gateway's own HTTP/1.1 client (fast, default) or
//     net/http's Transport (Config.Upstream). Every request to a model's
//     replicas (and its metadata request) carries the model's call
//     credential (Deps.CallKey, internal/artifactcred.Call, derived once per
//     model in the fleet), which the replicas require; a replica's 401
//     (runtimeapi.Refused) is the platform's misconfiguration, answered 502
//     upstream_error, never relayed as the customer's.
//   - fleet.go: per-deployment state (replica pool, autoscaling figures),
//     by deployment.Key: a model's name for its stable track, name_canary
//     for its canary; the fleet is the one writer of every pool.
//   - discovery.go: finding replicas (DNS: tasks.<deployment.ServiceName>,
//     static) as plain data, a snapshot of addresses per deployment that
//     the fleet applies. A failed lookup keeps
//     a model's replicas, except at zero (the catalogue's desired count):
//     Swarm's DNS, which knows no name without a running task, may time
//     out rather than answer NXDOMAIN on a node with no route out.
//   - prober.go: the one readiness check of replicas, for ejected replicas
//     and for the first replica of a model at zero.
//   - balancer.go: Upstream, Pool and the selection policies.
//   - canary.go, agree.go, versions.go: canary and shadow (issue 20). A
//     model with a routed canary (Model.Canary, from deployment.Route) runs
//     two versions, each on its own pool (discovered, balanced, retried,
//     ejected and held at zero on its own). In canary mode the split
//     (splitPoint, toCanary: a pure function of the weight and a point in
//     [0, 100), random or, sticky, the hash of the model and the API key's
//     id) picks the version of each request; a canary without an
//     available replica hands its requests to the stable version. In
//     shadow mode the stable version answers and, once its answer is in,
//     a copy goes to the canary in the background: at most
//     Config.ShadowInflight per model in flight (beyond, dropped and
//     counted), never billed nor rate-limited, never waited for; the two
//     answers are compared (agree.go: same top label, same entities and
//     spans, embeddings at cosine >= 0.99). Every answer names its version
//     in X-Model-Version. Per version (model, version, live or shadow) the
//     answers are counted as Prometheus series and, once a second, into
//     Redis (internal/versionstats), which the scheduler's automatic
//     rollback and status read. Promote and rollback arrive as any
//     deployment change (LISTEN/NOTIFY, a catalogue reload): a request
//     picks its version from the catalogue it starts with, and a retired
//     canary's replicas outlive the NOTIFY (deployment.Drain), so the
//     switch fails no request.
//   - auth.go, limit.go, usage.go, catalog.go, metrics.go: keys, rate
//     limits and quotas, usage metering, the model catalogue, metrics.
//     The key cache is two: valid keys, and unknown or revoked hashes
//     (bounded, short-lived), so that a flood of unknown keys never evicts
//     a valid one. Verdicts shared through Redis are sealed (HMAC-SHA256
//     under a secret only gateways hold): Redis is not trusted with them.
//     A quota count Redis lost is seeded again from the month's usage in
//     Postgres.
//   - usage.go, usagespool.go: usage metering that loses nothing. Each
//     request is counted (requests, texts, errors; for generation, input
//     and output tokens once the answer's usage is known) before its answer
//     is written and, with
//     Config.UsageSpool, copied into a memory-mapped journal on a volume
//     (a kill loses nothing); each flush is a batch with a random id written in one
//     transaction with that id (usage_batches), so a batch replayed from the
//     spool counts once; a row Postgres refuses for its data is skipped
//     alone and recorded, the rest of the batch is written.
//   - readiness (gateway.go, Ready): a model catalogue, from Postgres or the
//     snapshot (Config.CatalogSnapshot) a gateway that cannot reach Postgres
//     at start serves from; Postgres is no part of it, so a database outage
//     never has Swarm kill the gateways, which serve the keys they know.
//   - shed.go: what keeps one customer from exhausting the gateway: an
//     in-flight cap per key (429 too_many_inflight), a cap on the body bytes
//     all requests in progress hold (503 overloaded), both atomics off any
//     lock; a token bucket of 401s per remote address (429
//     too_many_unauthorized, no key lookup) that a cached valid key never
//     meets; the v2 infer route's text count (its limit and metering are the
//     task API's). Bodies grow as bytes arrive, never from the declared
//     Content-Length, within a body deadline (408).
//   - jobs.go, jobs_worker.go, jobs_config.go: asynchronous jobs (issue
//     20; records and queue are internal/jobqueue's, the worker and the
//     webhooks package jobs'). POST /v1/jobs takes up to 100,000 texts as
//     JSON or JSONL and streams them into Postgres inside one transaction
//     (memory bounded by one text; 413 past --jobmaxbytes or
//     --jobmaxtextbytes; model and task admitted as soon as the body names
//     them), charges the texts to the monthly quota and answers 202; GET
//     shows state and progress, /results and /errors page the answers and
//     the dead-letter list as JSONL, /cancel stops the work, and
//     /v1/jobs/webhook-secret (and /rotate) give the account's webhook
//     signing secret. Every gateway runs a job worker (unless
//     --nojobworker) whose calls go through forward like a customer's, at
//     most --jobworkers batches at once and none claimed while the
//     gateway's interactive requests in flight reach --jobpauseinflight;
//     its batches go to the runtime's background lane
//     (runtimeapi.PathPredictBackground); the texts it answers are metered
//     as usage (one request each), and a cancelled job's unprocessed texts
//     go back to the key's monthly quota (Limiter.refundQuota).
//   - memlimit.go: the Go memory limit the gateway role sets from the
//     container's cgroup limit.
//
// It does not touch Swarm or the deployments table's writers; it reads the
// catalogue from Postgres and talks to runtimes only through runtimeapi's
// contract.
//
// Redis failures fail open: rate limits and quotas are skipped for the
// request, nlpswarm_gateway_ratelimit_failopen_total counts it and a warning
// is logged (at most once every 10 s), so that Redis going down does not take
// the customer API down with it.
package gateway
