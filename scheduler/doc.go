// Package scheduler owns turning desired deployments into Swarm services:
// the pure service-spec builder (spec.go), the reconciler (the only part of
// nlpswarm that writes to Docker), leader election, node inventory sync,
// observed status and each replica's cold-start record, and the autoscaler,
// which turns the gateways' load figures (Redis) into replica counts written
// through internal/deployment like a manual scale. It never serves customer
// traffic.
//
// Leadership (run.go) is a lease, a row of scheduler_lease whose expiry is
// on Postgres's clock (DefaultLeaseTTL, renewed every third of it), not a
// session advisory lock, which a power cut of the leader's node left held
// until Postgres's TCP noticed (about 2 h; issue 18 item 3). The row names
// the backend of the leader's renewal connection, so a leader whose process
// died (its connection closed) is replaced at the standby's next try, not
// at the expiry. The leader counts its lease lost TTL after the start of its
// last successful renewal, by its own clock, which is never later than
// Postgres's expiry, so it stops acting before another scheduler can take
// the lease. A pass that Swarm does not answer (its manager lost quorum:
// "The swarm does not have a leader") records on every deployment status
// unknown with Swarm's answer, keeping the replicas last observed and the
// generation last acted on, so a deploy or scale waiting to be applied
// says why (`--wait` ends at its timeout with it); it is applied once Swarm
// answers again (issue 18 item 4).
//
// Every model service runs with least privilege (BuildSpec, whatever the
// deployment asks): a read-only root filesystem whose only writable paths are
// the node's artifact-cache volume and a 64 MiB tmpfs at /tmp (mode 1777);
// all capabilities dropped; user nobody (65534:65534, the image's USER, whose
// cache folder Docker copies into the volume it creates); at most 512 pids; a
// CPU limit of 2 CPUs when the deployment sets none (and then no CPU
// reservation); json-file logs rotated at 10 MB, 3 files. It gets no
// Docker secret: its artifact download is authorized by a credential for its
// own digest (internal/artifactcred), which BuildSpec mints with
// SpecConfig.ArtifactKey (derived from the internal token, which only the
// scheduler and the apiserver hold) into the runtime's --artifactcredential,
// and its inference routes answer only its model's call credential, which
// BuildSpec derives with SpecConfig.CallKey (from the replica call secret,
// which only the scheduler and the gateways hold) into --callcredential.
// The expiry is on a weekly grid offset per digest (artifactcred.Expiry), so
// every reconcile within a week builds the same spec, the credential is
// always valid for at least one more week, and once a week the spec changes
// and Swarm rolls the service (start-first, the replicas reuse the artifact
// in the node's cache). See internal/artifactcred for restarts after expiry.
//
// Each deployment runs one inference engine (issue 14): the one it asks for
// (internal/deployment's backend: go or ort), else ort when the scheduler
// has an ORT runtime image (--ortimage, nlpswarm-ort), else go.
// SpecConfig.Engine decides it (pure); the engine picks the service's image
// (the control-plane image for go, the ORT image for ort) and the runtime's
// --engine.backend, is labelled nlpswarm.backend, and is part of the spec
// hash, so a change of engine is a rolling update. A deployment asking for
// ort with no ORT image is unplaceable with that reason (its service, if
// any, left as it is); the effective engine is written into its observed
// state, which `nlpswarm status` and the pages show.
//
// Generation (issue 15). A text-generation deployment (a GGUF model) runs
// the generation runtime, the `generate` role in front of llama-server,
// as a Swarm service like every model: EngineOf (pure) gives it llama.cpp,
// on the CUDA image (SpecConfig.LlamaCUDAImage, --llamacudaimage,
// nlpswarm-llama-cuda; backend llama-cuda) when it asks for GPUs, else the
// CPU image (LlamaImage, --llamaimage, nlpswarm-llama; backend llama).
// BuildSpec gives the role the model's artifact and credentials as a
// runtime's, GenerationSlots parallel slots of the model's own context (the
// figure the upload's memory estimate assumed), the CPU threads of its
// limit, every layer offloaded (--generation.gpulayers) on the CUDA image,
// and a 10-minute health start period (a GGUF is GiBs). Its memory comes
// from the deployment record, where the apiserver wrote the upload's
// estimate (memory_estimate_bytes) when the operator gave none: the memory
// reservation on CPUs, the GPU memory (each GPU's share) on GPUs, which the
// best-fit placement below reserves like any GPU deployment's, each replica
// a service pinned by node.id and NVIDIA_VISIBLE_DEVICES (the NVIDIA
// container runtime on the node mounts the driver and those GPUs). Refused,
// with the reason, in the plan and the deployment's status: a generation
// model with no image of its kind, one naming an encoder backend, and one
// asking more memory per GPU than any GPU of the inventory has
// (GPUTooSmall). An embedding GGUF (task feature-extraction, its version's
// format gguf in the deployment record) is a generation deployment too
// (Generation), its role started in the embeddings mode
// (--generation.embeddings: /v1/embeddings only); an ONNX encoder of the
// same task keeps the models runtime.
//
// A reconcile pass is Nomad-like, in three steps:
//
//   - inputs: the desired deployments (internal/deployment.LoadDesired), the
//     managed services (Docker's service list, by the owner label), and the
//     inventory: nodes, GPUs and the GPU assignments held;
//   - plan := Diff(desired, services, inventory): a pure function (plan.go,
//     table-tested without Docker) that decides every GPU to free and to
//     place per replica slot (scheduler/placement's best fit, with its
//     reason when nothing fits), every service to create, update
//     (spec-hash change, replica change, scale to zero) or remove (managed
//     services no deployment wants, GPU replica services beyond the count),
//     and what is unchanged;
//   - apply(plan): the thin effect step, Postgres (GPU assignments,
//     statuses) then Docker; then observe each placed deployment's tasks and
//     write its status and cold starts through internal/deployment (each
//     task's node, GPUs and main pid, by which the nodes page tells the
//     platform's GPU processes from others').
//
// GPU replicas (issue 16). Swarm gives every task of a service the same
// spec, so replicas of one service cannot have different
// NVIDIA_VISIBLE_DEVICES or node pins; Swarm generic resources would let the
// engine hand out GPUs per task, but break overlay networking on Debian's
// engine 20.10 (moby#44378) and know nothing of GPU memory. So each replica
// of a GPU deployment is a service of its own, nlp-<model>-g<slot>
// (GroupServiceName), one task pinned by node.id and NVIDIA_VISIBLE_DEVICES
// to what placement gave that slot (a gpu_assignments row per slot and
// GPU). Every replica service carries the network alias nlp-<model>, so
// Swarm's DNS answers tasks.nlp-<model> with the tasks of all of them (as
// for a CPU deployment's one service): the gateway's discovery is
// unchanged. Diff places slot by slot: a slot keeps what it holds while it
// still fits on an available node (a running replica never moves for
// nothing), slots beyond the count are given back (scale down, to zero:
// their services are removed), and new or lost slots (scale up, wake from
// zero, a node lost or drained) are placed by best fit away from the other
// replicas' nodes, then GPUs (placement.PlaceSpread): replicas of one model
// share a node only when no other node can take them. A re-placed slot is a
// start-first update of its own service; a version change updates each
// replica service (below, "Rolling a GPU replica"). A deployment only
// part of whose replicas fit runs those, its status saying why the others
// do not (Plan.Short).
//
// Rolling a GPU replica (a new version, image or credential: each replica
// service is updated start-first, all of them in one pass). Swarm's
// start-first update starts the new task beside the old one, pinned to the
// same node and NVIDIA_VISIBLE_DEVICES, and stops the old one once the new
// one is running (healthy): for that while the GPU holds two copies of the
// model, and a GPU without room for the second copy (a 16 GiB replica on a
// 16 GiB GPU, or memory used by something else, which NVML's free figure
// shows) would fail the new task on a real GPU (out of memory), Swarm would
// roll it back, and the version would never roll. So Diff (placeGPUs)
// decides per replica, from the inventory: start-first where it runs when
// its GPU has room for the second copy (RollInPlace); else the replica is
// placed anew on a GPU that has room, start-first (RollMoved: the old task
// serves on its GPU until the new one runs on the other; its assignment
// moves at once); else it rolls stop-first on its GPU (RollStopFirst: apply
// sends that update order, the spec hash unchanged), one replica of the
// model at a time, the others waiting (RollDeferred) while one of its
// services is being rolled (Swarm's update status), so the others serve
// meanwhile (a 1-replica model has no other: its roll on a full cluster is
// an outage of one restart). The second copies and a moved replica's old
// GPU are held for the rest of the pass (two rolls never count on the same
// room), never in the inventory: gpu_assignments keeps one row per replica
// slot and GPU, so a start-first roll books nothing twice and leaks nothing.
// A changed request (say 4 → 16 GiB) placed back on the GPU its old task
// still runs on rolls the same way. Placement that runs in the same pass is
// not told of a roll in flight from an earlier pass (seconds, until Swarm
// stops the old task); on a real GPU NVML's free figure, which placement
// takes when larger than the assignments, covers it.
//
// CPU deployments keep one service whose tasks Swarm places; Swarm does not
// rebalance, so a node back from a drain or failure took no replicas and a
// later drain of the node holding all of them lost most of a run (issue 18
// item 7). Their spec caps tasks per node (Swarm MaxReplicas, MaxPerNode in
// spread.go, a pure function) at ceil((replicas+1)/eligible nodes) when at
// least two nodes are eligible: hard anti-affinity (1) whenever a spare node
// exists, and always room for the one extra task of a start-first update;
// no cap on a one-node swarm. Eligible nodes are the not-drained ones that
// meet the constraints, down ones included, so a power cut does not change
// every service's spec (a rolling update of the whole cluster at the worst
// moment); a drain or a new node does, and those services roll start-first.
//
// Reconciler.Plan is the same Diff with nothing applied: any scheduler
// replica serves it on GET /plan (PlanHandler), which the apiserver relays to
// `nlpswarm status --plan`.
//
// /plan and /sd (below) answer only the holders of the read token
// (ReadOnly: a bearer token, the Docker secret scheduler_read_token, which
// the apiserver and Prometheus hold), not anyone on the control network.
//
// Any replica also serves Prometheus's scrape targets on GET /sd (sd.go, in
// Prometheus's HTTP SD format), so Prometheus needs no Docker socket: SDTargets
// (pure, over a snapshot of services, tasks and node hostnames) lists every
// running task of a service labelled nlpswarm.metrics.port, at that port, on
// the control network or, for model services, the runtimes', labelled
// service, model, node and slot (the labels the dashboards, alerts and the
// apiserver's monitor pages query).
//
// Canary and shadow (issue 20): a model's canary is a deployment of its own
// (track canary) and a service of its own, nlp-MODEL_canary (labelled
// nlpswarm.track=canary; the stable service has no track label, so its spec
// and hash, and every existing stack, are as before), with its own version,
// replicas, resources and autoscaling bounds; the plan, the GPU
// assignments and the status writes are keyed by deployment.Key (MODEL or
// MODEL_canary), while the runtime of either serves the model's name with
// the model's call credential. A GPU canary is placed like any GPU
// deployment (its replicas beside the stable ones', if they fit; else it is
// unplaceable and says why, the stable one untouched). The autoscaler scales
// each track on its own bounds for its share of the model's load
// (deployment.Autoscaled.Share: weight/100 for a canary, the rest for its
// stable, all of it for a shadow). CanaryWatcher (canary_watch.go), on the
// leader, decides every second with scheduler/canary (pure): a promoting
// canary is retired once the stable service runs its version and Swarm no
// longer rolls it; an active canary whose figures over its rule's window
// (internal/versionstats, from the gateways) break its bound is rolled back,
// with the reason status shows. A retired canary's service is removed a
// deployment.Drain after it left the routing; a new canary within that
// drain takes the service over, rolled stop-first (Diff), and its status
// is running, which routes it (deployment.Routable), only once no task of
// another version is left (observe, runsDigest).
//
// The deployment record (types, reads, writes, NOTIFY) is
// internal/deployment's; the runtime's cold-start record is
// internal/coldstart's; placement decisions live in scheduler/placement
// (pure), the autoscaling rule in scheduler/autoscale (pure), the canary
// rollout's rule in scheduler/canary (pure) and the GPU
// inventory in scheduler/agent. It imports no other role but modelmgr's
// memory floor.
package scheduler
