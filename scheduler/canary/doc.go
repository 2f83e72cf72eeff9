// Package canary is the scheduler's decision over a model's canary
// rollout, pure and table-tested: from a snapshot of the rollout (its state,
// its automatic rollback rule, the stable deployment's progress and the
// canary's figures over the rule's window, which the gateways publish in
// internal/versionstats), what to do now: nothing, finish a promote (the
// stable service runs the new version everywhere), or roll the canary back
// and why. The scheduler's loop (scheduler.CanaryWatcher) reads the
// snapshot and applies the verdict through internal/deployment.
package canary
