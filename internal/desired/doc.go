// Package desired is the one writer of a deployment's replica count: the
// scale API (manual `nlpswarm scale`) and the scheduler's autoscaler both go
// through Scale, which bumps the generation, records when and why the count
// changed, and signals the change on the deployments channel (NOTIFY) in the
// caller's transaction, so that the reconciler acts on it. It decides nothing
// (the autoscaler's rule is scheduler/autoscale) and never talks to Docker.
package desired
