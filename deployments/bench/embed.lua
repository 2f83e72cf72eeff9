-- wrk script of bench-stack: one short text per request to the gateway's
-- embeddings route, with the key from the environment.
wrk.method = "POST"
wrk.body = '{"text":"what a wonderful concert and a great evening"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token " .. os.getenv("NLPSWARM_BENCH_KEY")

done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  -- requests counts every answer, non-2xx ones too: rps is of the 2xx ones
  local ok = summary.requests - summary.errors.status
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, ok / s, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
