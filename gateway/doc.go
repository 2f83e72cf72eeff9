// Package gateway is the customer API: API keys, rate limits and quotas,
// replica discovery, load balancing, retries, timeouts, metrics and usage
// metering in front of the model runtimes. For autoscaling it publishes each
// model's load to Redis and holds requests for a model at zero while a
// replica starts (autoscale.go).
//
// Redis failures fail open: rate limits and quotas are skipped for the
// request, nlpswarm_gateway_ratelimit_failopen_total counts it and a warning
// is logged (at most once every 10 s), so that Redis going down does not take
// the customer API down with it.
package gateway
