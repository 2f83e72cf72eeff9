// Package autoscale is the autoscaler's rule: a pure function from what was
// observed of a model (replicas now, its bounds, the recent in-flight and
// request-rate samples the gateways published, the time since its replica
// count last changed, its last request) to the replica count it should have,
// with the reason in words. The bounds themselves (their defaults and
// validation) are the deployment record's (internal/deployment.Autoscale,
// aliased here as Bounds), so that the API and the CLI refuse the same things.
//
// It must not touch anything: no Postgres, no Redis, no Docker, no clock of
// its own (the caller passes Now). Reading the figures and writing the
// decision through the scale path is the scheduler's job (scheduler.Autoscaler);
// talking to Docker is the reconciler's alone.
package autoscale
