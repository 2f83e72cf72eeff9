// Package httpserver owns the life of every HTTP server of nlpswarm: timeouts,
// the operational endpoints (/healthz, /readyz, /metrics) and graceful
// shutdown (readiness off at once, a drain period, then in-flight requests
// finish). It knows nothing about any role's routes.
package httpserver
