// Package scheduler owns turning desired deployments (Postgres) into Swarm
// services: the pure service-spec builder, the reconciler (the only part of
// nlpswarm that writes to Docker), leader election, node inventory sync,
// observed status and each replica's cold-start record, and the autoscaler,
// which turns the gateways' load figures (Redis) into replica counts written
// through internal/desired like a manual scale. Placement decisions live in
// scheduler/placement (pure), the autoscaling rule in scheduler/autoscale
// (pure) and the GPU inventory in scheduler/agent. It never serves customer
// traffic.
package scheduler
