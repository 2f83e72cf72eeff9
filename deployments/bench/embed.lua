-- wrk script of bench-stack: one short text per request to the gateway's
-- embeddings route, with the key from the environment.
wrk.method = "POST"
wrk.body = '{"text":"what a wonderful concert and a great evening"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token " .. os.getenv("NLPSWARM_BENCH_KEY")

done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests / s, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
