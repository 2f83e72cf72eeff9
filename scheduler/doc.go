// Package scheduler owns turning desired deployments (Postgres) into Swarm
// services: the pure service-spec builder, the reconciler (the only part of
// nlpswarm that writes to Docker), leader election, node inventory sync and
// observed status. Placement decisions live in scheduler/placement (pure) and
// the GPU inventory in scheduler/agent. It never serves customer traffic.
package scheduler
