package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Docker is the part of the Engine API the scheduler uses; *client.Client
// satisfies it. The reconcile decisions are tested without it (Diff, in
// plan.go); the effects against the real engine.
type Docker interface {
	ServiceList(ctx context.Context, o client.ServiceListOptions) (client.ServiceListResult, error)
	ServiceCreate(ctx context.Context, o client.ServiceCreateOptions) (client.ServiceCreateResult, error)
	ServiceInspect(ctx context.Context, id string, o client.ServiceInspectOptions) (client.ServiceInspectResult, error)
	ServiceUpdate(ctx context.Context, id string, o client.ServiceUpdateOptions) (client.ServiceUpdateResult, error)
	ServiceRemove(ctx context.Context, id string, o client.ServiceRemoveOptions) (client.ServiceRemoveResult, error)
	TaskList(ctx context.Context, o client.TaskListOptions) (client.TaskListResult, error)
	TaskLogs(ctx context.Context, taskID string, o client.TaskLogsOptions) (client.TaskLogsResult, error)
	NodeList(ctx context.Context, o client.NodeListOptions) (client.NodeListResult, error)
}

// Reconciler drives Swarm toward the desired deployments.
type Reconciler struct {
	DB      *pgxpool.Pool
	Docker  Docker
	Spec    SpecConfig
	Log     *slog.Logger
	Metrics *Metrics // optional
	// Events, when set, wakes Loop on Swarm node and service events
	// (WatchSwarm); without it Loop wakes on NOTIFY and its resync timer.
	Events EventSource

	starts startTracker // cold starts recorded (coldstart.go)
}

// Result counts what one pass did.
type Result struct {
	Created, Updated, Removed, Unchanged int
}

func (r *Reconciler) managedFilter() client.Filters {
	return client.Filters{}.Add("label", LabelManaged+"=true", LabelOwner+"="+r.Spec.owner())
}

// inputs reads what Diff needs: the desired deployments, the managed
// services, the inventory with the GPU assignments held. When Swarm does not
// list the services, the desired deployments come back with its error.
func (r *Reconciler) inputs(ctx context.Context) ([]deployment.Desired, []Service, placement.Snapshot, error) {
	var inv placement.Snapshot
	desired, err := deployment.LoadDesired(ctx, r.DB)
	if err != nil {
		return nil, nil, inv, err
	}
	list, err := r.Docker.ServiceList(ctx, client.ServiceListOptions{Filters: r.managedFilter()})
	if err != nil {
		// desired comes back with Swarm's error only: Pass records on
		// each deployment why it is stuck
		return desired, nil, inv, fmt.Errorf("list services: %w", err)
	}
	services := make([]Service, len(list.Items))
	for i, s := range list.Items {
		services[i] = serviceOf(s, time.Now())
	}
	inv, err = r.loadInventory(ctx)
	if err != nil {
		return nil, nil, inv, err // Postgres's, not Swarm's
	}
	return desired, services, inv, nil
}

// Plan is a dry run: what a pass would do now, with nothing done.
func (r *Reconciler) Plan(ctx context.Context) (Plan, error) {
	desired, services, inv, err := r.inputs(ctx)
	if err != nil {
		return Plan{}, err
	}
	return Diff(desired, services, inv, r.Spec), nil
}

// Pass reconciles once: read the inputs, Diff them into a plan, apply it,
// then observe every placed deployment and record its status. A second
// pass with nothing changed does nothing.
func (r *Reconciler) Pass(ctx context.Context) (Result, error) {
	desired, services, inv, err := r.inputs(ctx)
	if err != nil {
		// Swarm does not answer (a manager without quorum: "The swarm does
		// not have a leader"): every deployment says so, rather than the
		// status of its last pass while a scale or deploy waits unapplied
		// (issue 18 item 4)
		for _, d := range desired {
			r.writeUnobserved(ctx, d.Key(), err)
		}
		return Result{}, err
	}
	plan := Diff(desired, services, inv, r.Spec)
	res, err := r.apply(ctx, plan)
	for _, d := range desired {
		if !plan.unplaceable(d.Key()) {
			r.observe(ctx, d, plan.services[d.Key()], plan.short(d.Key()))
		}
	}
	return res, err
}

// apply carries plan out: GPU assignments first (Postgres), then the
// services (Docker). A failed service change is recorded in its
// deployment's status and the others go on.
func (r *Reconciler) apply(ctx context.Context, plan Plan) (Result, error) {
	res := Result{Unchanged: len(plan.Unchanged)}
	if err := deployment.FreeGPUs(ctx, r.DB, plan.GPUFrees); err != nil {
		return res, err
	}
	for _, a := range plan.GPUAssigns {
		err := pgx.BeginFunc(ctx, r.DB, func(tx pgx.Tx) error { return deployment.AssignGPUs(ctx, tx, a.Model, a.Assignments) })
		if err != nil {
			return res, err
		}
	}
	for _, u := range plan.Unplaceable {
		r.writeStatus(ctx, u.Model, u.Generation, deployment.StatusUnplaceable, u.Reason, nil)
	}
	var errs []error
	for _, c := range plan.Creates {
		if _, err := r.Docker.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: c.Spec}); err != nil {
			errs = append(errs, fmt.Errorf("create %s: %w", c.Service, err))
			r.writeStatus(ctx, c.Model, c.Desired.Generation, deployment.StatusFailed, "create service: "+err.Error(), nil)
			continue
		}
		r.Log.Info("service created", "service", c.Service, "version", c.Version, "replicas", c.Replicas)
		res.Created++
	}
	for _, c := range plan.Updates {
		spec := c.Spec
		if c.StopFirst {
			uc := *spec.UpdateConfig
			uc.Order = swarm.UpdateOrderStopFirst
			spec.UpdateConfig = &uc
		}
		if err := r.update(ctx, c.ServiceID, spec); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Log.Info("service updated", "service", c.Service, "version", c.Version, "replicas", c.Replicas, "why", c.Why)
		res.Updated++
	}
	for _, d := range plan.Deferred {
		r.Log.Info("rolling update deferred", "service", d.Service, "why", d.Why)
	}
	for _, rm := range plan.Removes {
		if _, err := r.Docker.ServiceRemove(ctx, rm.ServiceID, client.ServiceRemoveOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", rm.Service, err))
			continue
		}
		r.Log.Info("service removed", "service", rm.Service)
		res.Removed++
	}
	return res, errors.Join(errs...)
}

func replicas(s swarm.ServiceSpec) uint64 {
	if s.Mode.Replicated == nil || s.Mode.Replicated.Replicas == nil {
		return 0
	}
	return *s.Mode.Replicated.Replicas
}

// update applies spec, re-inspecting and retrying when Swarm answers that the
// version is stale ("update out of sequence").
func (r *Reconciler) update(ctx context.Context, id string, spec swarm.ServiceSpec) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var cur client.ServiceInspectResult
		cur, err = r.Docker.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect %s: %w", spec.Name, err)
		}
		_, err = r.Docker.ServiceUpdate(ctx, id, client.ServiceUpdateOptions{Version: cur.Service.Version, Spec: spec})
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "out of sequence") {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("update %s: %w", spec.Name, ctx.Err())
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
	return fmt.Errorf("update %s: %w", spec.Name, err)
}

// observe reads the tasks of d's services (one, or one per GPU replica
// slot) and records its status; short is why some GPU replicas could not
// be placed ("" when all were).
func (r *Reconciler) observe(ctx context.Context, d deployment.Desired, services []string, short string) {
	var tasks []swarm.Task
	for _, name := range services {
		tl, err := r.Docker.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("service", name)})
		if err != nil {
			r.writeUnobserved(ctx, d.Key(), fmt.Errorf("list tasks: %w", err))
			return
		}
		for _, t := range tl.Items {
			if t.Spec.ContainerSpec != nil {
				if slot, err := strconv.Atoi(t.Spec.ContainerSpec.Labels[LabelSlot]); err == nil {
					t.Slot = slot // a GPU replica's own service: its one task is the slot
				}
			}
			tasks = append(tasks, t)
		}
	}
	nodes := r.nodeNames(ctx)
	// the engine is resolved here as in the spec (Diff refused the
	// deployments whose engine cannot be had, so none is observed)
	eng, _ := r.Spec.EngineOf(d)
	obs := deployment.Observed{Desired: d.Replicas, Tasks: []deployment.TaskState{}, Backend: eng.Backend}
	lastErr := ""
	previous := 0 // a canary's tasks that still run another version
	for _, t := range tasks {
		if t.DesiredState != swarm.TaskStateRunning && t.DesiredState != swarm.TaskStateReady {
			if t.Status.Err != "" && lastErr == "" {
				lastErr = t.Status.Err
			}
			continue
		}
		if d.Track == deployment.TrackCanary && !runsDigest(t, d.Digest) {
			previous++
		}
		if t.Status.State == swarm.TaskStateRunning {
			obs.Running++
		}
		node := nodes[t.NodeID]
		if node == "" {
			node = t.NodeID
		}
		ts := deployment.TaskState{Slot: t.Slot, Node: node, GPUs: taskGPUs(t), State: string(t.Status.State), Error: t.Status.Err}
		if cs := t.Status.ContainerStatus; cs != nil {
			ts.PID = cs.PID
		}
		obs.Tasks = append(obs.Tasks, ts)
	}
	sort.SliceStable(obs.Tasks, func(i, j int) bool { return obs.Tasks[i].Slot < obs.Tasks[j].Slot })
	status, msg := deployment.StatusDeploying, fmt.Sprintf("%d of %d replicas running", obs.Running, d.Replicas)
	switch {
	case previous > 0:
		// a new canary taking over the previous one's service (its drain):
		// not running yet, and so not routed (deployment.Routable), until
		// no task of the previous version is left
		msg += fmt.Sprintf("; %d still of the previous canary", previous)
	case obs.Running == d.Replicas && len(obs.Tasks) == d.Replicas:
		status = deployment.StatusRunning
	case short != "":
		msg += "; " + short
	case lastErr != "":
		msg += "; last error: " + lastErr
	}
	for _, t := range obs.Tasks {
		if t.State == string(swarm.TaskStatePending) && t.Error != "" {
			status, msg = deployment.StatusPending, t.Error
		}
	}
	r.writeStatus(ctx, d.Key(), d.Generation, status, msg, &obs)
	r.recordStarts(ctx, d, tasks, nodes)
}

// runsDigest reports whether task t runs the model artifact digest (its
// --digest argument; a task without one is taken as running it).
func runsDigest(t swarm.Task, digest string) bool {
	if t.Spec.ContainerSpec == nil {
		return true
	}
	for _, a := range t.Spec.ContainerSpec.Args {
		if v, ok := strings.CutPrefix(a, "--digest="); ok {
			return v == digest
		}
	}
	return true
}

// taskGPUs is the GPUs a task was given (its NVIDIA_VISIBLE_DEVICES; none
// for "void", a CPU replica's).
func taskGPUs(t swarm.Task) []string {
	if t.Spec.ContainerSpec == nil {
		return nil
	}
	for _, e := range t.Spec.ContainerSpec.Env {
		if v, ok := strings.CutPrefix(e, "NVIDIA_VISIBLE_DEVICES="); ok && v != "" && v != "void" {
			return strings.Split(v, ",")
		}
	}
	return nil
}

func (r *Reconciler) writeStatus(ctx context.Context, model string, generation int64, status, msg string, obs *deployment.Observed) {
	if err := deployment.WriteStatus(ctx, r.DB, model, generation, status, msg, obs); err != nil {
		r.Log.Warn("write status", "model", model, "err", err)
	}
}

// writeUnobserved records that Swarm did not answer about model, keeping
// the replicas last observed (they most likely still serve).
func (r *Reconciler) writeUnobserved(ctx context.Context, model string, err error) {
	msg := "swarm not answering, desired state kept until it does: " + err.Error()
	if werr := deployment.WriteUnobserved(ctx, r.DB, model, msg); werr != nil {
		r.Log.Warn("write status", "model", model, "err", werr)
	}
}

func (r *Reconciler) nodeNames(ctx context.Context) map[string]string {
	out := map[string]string{}
	nl, err := r.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return out
	}
	for _, n := range nl.Items {
		out[n.ID] = n.Description.Hostname
	}
	return out
}

// SyncNodes copies the Swarm nodes into the nodes table.
func (r *Reconciler) SyncNodes(ctx context.Context) error {
	nl, err := r.Docker.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	ids := []string{}
	for _, n := range nl.Items {
		labels, _ := json.Marshal(n.Spec.Labels)
		if n.Spec.Labels == nil {
			labels = []byte("{}")
		}
		_, err := r.DB.Exec(ctx, `INSERT INTO nodes (id, hostname, role, availability, state, addr, labels, nano_cpus, memory_bytes, updated_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,now())
			ON CONFLICT (id) DO UPDATE SET hostname=EXCLUDED.hostname, role=EXCLUDED.role, availability=EXCLUDED.availability,
				state=EXCLUDED.state, addr=EXCLUDED.addr, labels=EXCLUDED.labels, nano_cpus=EXCLUDED.nano_cpus,
				memory_bytes=EXCLUDED.memory_bytes, updated_at=now()`,
			n.ID, n.Description.Hostname, string(n.Spec.Role), string(n.Spec.Availability), string(n.Status.State), n.Status.Addr,
			labels, n.Description.Resources.NanoCPUs, n.Description.Resources.MemoryBytes)
		if err != nil {
			return fmt.Errorf("store node %s: %w", n.ID, err)
		}
		ids = append(ids, n.ID)
	}
	_, err = r.DB.Exec(ctx, `DELETE FROM nodes WHERE NOT (id = ANY($1))`, ids)
	return err
}

// loadInventory reads nodes, GPUs and the GPU assignments held into a
// placement snapshot.
func (r *Reconciler) loadInventory(ctx context.Context) (placement.Snapshot, error) {
	var snap placement.Snapshot
	rows, err := r.DB.Query(ctx, `SELECT n.id, n.hostname, n.availability = 'active' AND n.state = 'ready', n.availability <> 'active',
			n.role, n.labels, g.uuid, g.memory_total, g.memory_free
		FROM nodes n LEFT JOIN gpus g ON g.node_id = n.id ORDER BY n.hostname, n.id, g.idx`)
	if err != nil {
		return snap, fmt.Errorf("load inventory: %w", err)
	}
	defer rows.Close()
	idx := map[string]int{}
	for rows.Next() {
		var id, host string
		var avail, drained bool
		var role string
		var labels map[string]string
		var uuid *string
		var total, free *int64
		if err := rows.Scan(&id, &host, &avail, &drained, &role, &labels, &uuid, &total, &free); err != nil {
			return snap, err
		}
		i, ok := idx[id]
		if !ok {
			i = len(snap.Nodes)
			idx[id] = i
			snap.Nodes = append(snap.Nodes, placement.Node{ID: id, Hostname: host, Available: avail, Drained: drained, Role: role, Labels: labels})
		}
		if uuid != nil {
			snap.Nodes[i].GPUs = append(snap.Nodes[i].GPUs, placement.GPU{UUID: *uuid, Total: *total, Free: *free})
		}
	}
	if err := rows.Err(); err != nil {
		return snap, err
	}
	held, err := deployment.Assignments(ctx, r.DB)
	if err != nil {
		return snap, err
	}
	for _, a := range held {
		snap.Assigned = append(snap.Assigned, placement.Assignment{Owner: a.Model, Slot: a.Slot, Node: a.Node, GPU: a.GPU, Memory: a.Memory})
	}
	return snap, nil
}
