// Package deployment is the one owner of the deployment record: the
// deployments table (a model's desired state, written by deploy, scale and
// the autoscaler; its observed state, written by the reconciler), the GPU
// memory the reconciler assigned to each (gpu_assignments), each replica's
// cold start (replica_starts), and the LISTEN/NOTIFY channel that signals a
// change. Every role reads and writes them through this package: the
// apiserver (deploy, scale, undeploy, status), the scheduler (LoadDesired,
// WriteStatus, the autoscaler's guarded Scale, GPU assignments, cold
// starts), the gateway (Routable, Listen) and modelmgr (DeployedSQL).
//
// One writer of the replica count: Put (deploy), Scale (the autoscaler) and
// ManualScale (`nlpswarm scale`) all set it through one SQL fragment
// (setReplicas), which bumps the generation and records when and why the
// count changed (scaled_at, scale_reason), and NOTIFY in the caller's
// transaction, so the reconciler acts on the commit.
//
// A deployment names its inference engine (backend: go, ort, or "" for the
// platform's default); the reconciler resolves it and writes the engine the
// replicas run into observed (Record.EffectiveBackend).
//
// Canary and shadow (issue 20): a model has at most two deployments, track
// stable (the row every model has) and track canary (a second version with
// its own service ServiceName(model, TrackCanary), resources and autoscaling
// bounds), named among all deployments by Key. The canary row carries the
// split (Canary: mode, weight, sticky), its automatic rollback rule and its
// rollout state; the gateway sees it as Route.Canary (Routable), filled
// while the rollout is active or promoting. See track.go.
//
// It is a contract package: it decides nothing (placement is
// scheduler/placement, the autoscaling rule scheduler/autoscale, the
// reconcile plan scheduler.Diff), never talks to Docker, and imports no role
// package (apiserver, scheduler, gateway, models, modelmgr); its errors are
// its own (ErrNotFound, ErrInvalid), mapped to API answers by the apiserver.
package deployment
