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
// bounds), named among all deployments by Key (model, or model_canary). The
// canary row carries the split (Canary: mode, weight, sticky), its automatic
// rollback rule and its rollout state; the gateway sees it as Route.Canary
// (Routable), filled while the rollout is active or promoting. See track.go
// and canary.go.
//
// The rollout, and what each step shows the gateway (every step NOTIFYs on
// Channel in its transaction):
//
//   - PutCanary: the canary row, state active; the scheduler creates its
//     service; the gateway splits by weight (or copies, for a shadow).
//   - Promote: the stable row takes the canary's version, resources and
//     engine (keeping its replica count and autoscaling bounds, sized for
//     all the traffic), its generation is bumped and its service rolls
//     start-first, as every version change does (no request lost); the
//     canary, state promoting, keeps its share meanwhile, so at no moment
//     does a service answer traffic it is not sized or ready for. The
//     stable row's former state is kept (promoted_from).
//   - FinishPromote (the scheduler, once the stable service runs the new
//     version everywhere and Swarm is no longer rolling it): state
//     promoted; Route.Canary is nil from the NOTIFY on, every request goes
//     to the stable service (the new version); the canary's service stays
//     up for Drain, so that requests a gateway sent it just before the
//     NOTIFY finish, then the reconciler removes it.
//   - Rollback (`nlpswarm rollback`, or the scheduler's automatic rule with
//     its reason): state rolled_back at once, Route.Canary nil from the
//     NOTIFY on; the service goes after Drain. During a promote, the stable
//     row gets its former state back (and rolls back start-first).
//
// A retired canary row stays (state and reason, for status) until the next
// canary replaces it or the model is undeployed (Delete removes both rows).
// A canary is routed (Routable) only once the scheduler has seen its
// service run its generation (routed_at, set by WriteStatus, which
// notifies): a new canary deployed within the previous one's drain takes
// that service over (the scheduler rolls it stop-first then), and until
// the update is done its tasks are partly the previous version's, whose
// answers would carry the new version's name and count in its figures
// (what the automatic rollback reads).
// The scheduler's role may UPDATE deployments but not DELETE them, which
// this keeps working: nothing in the rollout deletes a row.
//
// It is a contract package: it decides nothing (placement is
// scheduler/placement, the autoscaling rule scheduler/autoscale, the
// reconcile plan scheduler.Diff), never talks to Docker, and imports no role
// package (apiserver, scheduler, gateway, models, modelmgr); its errors are
// its own (ErrNotFound, ErrInvalid), mapped to API answers by the apiserver.
package deployment
