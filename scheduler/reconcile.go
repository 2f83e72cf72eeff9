package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Docker is the part of the Engine API the scheduler uses; *client.Client
// satisfies it, and tests may replay recorded answers.
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

	starts startTracker // cold starts recorded (coldstart.go)
}

// Result counts what one pass did.
type Result struct {
	Created, Updated, Removed, Unchanged int
}

// LoadDesired reads every deployment with its model and version.
func (r *Reconciler) LoadDesired(ctx context.Context) ([]Desired, error) {
	rows, err := r.DB.Query(ctx, `SELECT m.name, m.task, d.version, v.digest, v.size_bytes, d.replicas, d.cpus,
			d.memory_bytes, d.memory_reservation_bytes, d.gpus, d.gpu_memory_bytes, d.placement_labels, d.generation
		FROM deployments d JOIN models m ON m.id = d.model_id
		JOIN model_versions v ON v.model_id = d.model_id AND v.version = d.version ORDER BY m.name`)
	if err != nil {
		return nil, fmt.Errorf("load deployments: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Desired, error) {
		var d Desired
		err := row.Scan(&d.Model, &d.Task, &d.Version, &d.Digest, &d.SizeBytes, &d.Replicas, &d.CPUs,
			&d.MemoryBytes, &d.MemoryReservation, &d.GPUs, &d.GPUMemory, &d.Labels, &d.Generation)
		return d, err
	})
}

func (r *Reconciler) managedFilter() client.Filters {
	return client.Filters{}.Add("label", LabelManaged+"=true", LabelOwner+"="+r.Spec.owner())
}

// Pass reconciles once: create, update, scale and remove services, then
// record observed state. A second pass with nothing changed does nothing.
func (r *Reconciler) Pass(ctx context.Context) (Result, error) {
	var res Result
	desired, err := r.LoadDesired(ctx)
	if err != nil {
		return res, err
	}
	list, err := r.Docker.ServiceList(ctx, client.ServiceListOptions{Filters: r.managedFilter()})
	if err != nil {
		return res, fmt.Errorf("list services: %w", err)
	}
	existing := map[string]swarm.Service{}
	for _, s := range list.Items {
		existing[s.Spec.Annotations.Name] = s
	}
	unplaced, err := r.placeGPUs(ctx, desired)
	if err != nil {
		return res, err
	}
	var errs []error
	want := map[string]bool{}
	for i := range desired {
		d := &desired[i]
		name := ServiceName(d.Model)
		want[name] = true
		if reason, ok := unplaced[d.Model]; ok {
			r.writeStatus(ctx, *d, "unplaceable", reason, nil)
			continue
		}
		spec := BuildSpec(*d, r.Spec)
		svc, ok := existing[name]
		switch {
		case !ok:
			if _, err := r.Docker.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec}); err != nil {
				errs = append(errs, fmt.Errorf("create %s: %w", name, err))
				r.writeStatus(ctx, *d, "failed", "create service: "+err.Error(), nil)
				continue
			}
			r.Log.Info("service created", "service", name, "version", d.Version, "replicas", d.Replicas)
			res.Created++
		case svc.Spec.Annotations.Labels[LabelSpecHash] != spec.Annotations.Labels[LabelSpecHash] || replicas(svc.Spec) != uint64(d.Replicas):
			if err := r.update(ctx, svc.ID, spec); err != nil {
				errs = append(errs, err)
				continue
			}
			r.Log.Info("service updated", "service", name, "version", d.Version, "replicas", d.Replicas)
			res.Updated++
		default:
			res.Unchanged++
		}
	}
	for name, svc := range existing {
		if !want[name] {
			if _, err := r.Docker.ServiceRemove(ctx, svc.ID, client.ServiceRemoveOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
				continue
			}
			r.Log.Info("service removed", "service", name)
			res.Removed++
		}
	}
	for _, d := range desired {
		if _, ok := unplaced[d.Model]; !ok {
			r.observe(ctx, d)
		}
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
		time.Sleep(time.Duration(50*(attempt+1)) * time.Millisecond)
	}
	return fmt.Errorf("update %s: %w", spec.Name, err)
}

// TaskState is one replica as observed.
type TaskState struct {
	Slot  int    `json:"slot"`
	Node  string `json:"node"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Observed is written to deployments.observed.
type Observed struct {
	Running int         `json:"running"`
	Desired int         `json:"desired"`
	Tasks   []TaskState `json:"tasks"`
}

func (r *Reconciler) observe(ctx context.Context, d Desired) {
	name := ServiceName(d.Model)
	tl, err := r.Docker.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("service", name)})
	if err != nil {
		r.writeStatus(ctx, d, "unknown", "list tasks: "+err.Error(), nil)
		return
	}
	nodes := r.nodeNames(ctx)
	obs := Observed{Desired: d.Replicas, Tasks: []TaskState{}}
	lastErr := ""
	for _, t := range tl.Items {
		if t.DesiredState != swarm.TaskStateRunning && t.DesiredState != swarm.TaskStateReady {
			if t.Status.Err != "" && lastErr == "" {
				lastErr = t.Status.Err
			}
			continue
		}
		if t.Status.State == swarm.TaskStateRunning {
			obs.Running++
		}
		node := nodes[t.NodeID]
		if node == "" {
			node = t.NodeID
		}
		obs.Tasks = append(obs.Tasks, TaskState{Slot: t.Slot, Node: node, State: string(t.Status.State), Error: t.Status.Err})
	}
	sort.Slice(obs.Tasks, func(i, j int) bool { return obs.Tasks[i].Slot < obs.Tasks[j].Slot })
	status, msg := "deploying", fmt.Sprintf("%d of %d replicas running", obs.Running, d.Replicas)
	switch {
	case obs.Running == d.Replicas && len(obs.Tasks) == d.Replicas:
		status = "running"
	case lastErr != "":
		msg += "; last error: " + lastErr
	}
	for _, t := range obs.Tasks {
		if t.State == string(swarm.TaskStatePending) && t.Error != "" {
			status, msg = "pending", t.Error
		}
	}
	r.writeStatus(ctx, d, status, msg, &obs)
	r.recordStarts(ctx, d, tl.Items, nodes)
}

func (r *Reconciler) writeStatus(ctx context.Context, d Desired, status, msg string, obs *Observed) {
	var raw []byte
	if obs != nil {
		raw, _ = json.Marshal(obs)
	} else {
		raw = []byte(`{"running":0,"desired":0,"tasks":[]}`)
	}
	_, err := r.DB.Exec(ctx, `UPDATE deployments d SET status = $2, status_message = $3, observed = $4,
			observed_generation = $5, observed_at = now()
		FROM models m WHERE m.id = d.model_id AND m.name = $1 AND d.generation <= $5`, d.Model, status, msg, raw, d.Generation)
	if err != nil {
		r.Log.Warn("write status", "model", d.Model, "err", err)
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

// placeGPUs pins GPU deployments through best-fit placement, keeping
// existing assignments; it returns the deployments that cannot be placed,
// with the reason in words.
func (r *Reconciler) placeGPUs(ctx context.Context, desired []Desired) (map[string]string, error) {
	unplaced := map[string]string{}
	var gpuDeps []*Desired
	keep := []string{}
	for i := range desired {
		if desired[i].GPUs > 0 {
			gpuDeps = append(gpuDeps, &desired[i])
			keep = append(keep, desired[i].Model)
		}
	}
	// assignments of deployments that are gone, or run nothing, free their
	// GPUs (one at zero is placed anew when scaled up)
	if _, err := r.DB.Exec(ctx, `DELETE FROM gpu_assignments a USING deployments d, models m
		WHERE a.deployment_id = d.id AND d.model_id = m.id AND (d.gpus = 0 OR d.replicas = 0 OR NOT (m.name = ANY($1)))`, keep); err != nil {
		return nil, fmt.Errorf("clear gpu assignments: %w", err)
	}
	if len(gpuDeps) == 0 {
		return unplaced, nil
	}
	snap, err := r.loadSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string][]placement.Assignment{}
	for _, a := range snap.Assigned {
		held[a.Owner] = append(held[a.Owner], a)
	}
	for _, d := range gpuDeps {
		if d.Replicas == 0 { // its assignment went above: nothing to place
			continue
		}
		need := int64(d.Replicas) * d.GPUMemory
		if a := held[d.Model]; len(a) == d.GPUs && a[0].Memory == need {
			pin := &Pin{NodeID: a[0].Node}
			for _, x := range a {
				pin.GPUUUIDs = append(pin.GPUUUIDs, x.GPU)
			}
			d.Pin = pin
			continue
		}
		// a changed request gives back what it held, then is placed anew
		snap = placement.WithoutOwner(snap, d.Model)
		st := placement.NewState(snap)
		plan, err := st.Place(placement.BestFit{}, placement.Request{Owner: d.Model, Replicas: d.Replicas, GPUs: d.GPUs, GPUMemory: d.GPUMemory, Labels: d.Labels})
		if err != nil {
			unplaced[d.Model] = err.Error()
			continue
		}
		snap = snap.With(plan)
		d.Pin = &Pin{NodeID: plan.Node, GPUUUIDs: plan.GPUs}
		if err := r.storeAssignment(ctx, d.Model, plan); err != nil {
			return nil, err
		}
	}
	return unplaced, nil
}

// loadSnapshot reads nodes, GPUs and assignments into a placement snapshot.
func (r *Reconciler) loadSnapshot(ctx context.Context) (placement.Snapshot, error) {
	var snap placement.Snapshot
	rows, err := r.DB.Query(ctx, `SELECT n.id, n.hostname, n.availability = 'active' AND n.state = 'ready', n.labels,
			g.uuid, g.memory_total, g.memory_free
		FROM nodes n LEFT JOIN gpus g ON g.node_id = n.id ORDER BY n.hostname, n.id, g.idx`)
	if err != nil {
		return snap, fmt.Errorf("load inventory: %w", err)
	}
	defer rows.Close()
	idx := map[string]int{}
	for rows.Next() {
		var id, host string
		var avail bool
		var labels map[string]string
		var uuid *string
		var total, free *int64
		if err := rows.Scan(&id, &host, &avail, &labels, &uuid, &total, &free); err != nil {
			return snap, err
		}
		i, ok := idx[id]
		if !ok {
			i = len(snap.Nodes)
			idx[id] = i
			snap.Nodes = append(snap.Nodes, placement.Node{ID: id, Hostname: host, Available: avail, Labels: labels})
		}
		if uuid != nil {
			snap.Nodes[i].GPUs = append(snap.Nodes[i].GPUs, placement.GPU{UUID: *uuid, Total: *total, Free: *free})
		}
	}
	if err := rows.Err(); err != nil {
		return snap, err
	}
	arows, err := r.DB.Query(ctx, `SELECT m.name, a.node_id, a.gpu_uuid, a.memory_bytes FROM gpu_assignments a
		JOIN deployments d ON d.id = a.deployment_id JOIN models m ON m.id = d.model_id ORDER BY m.name, a.gpu_uuid`)
	if err != nil {
		return snap, fmt.Errorf("load assignments: %w", err)
	}
	snap.Assigned, err = pgx.CollectRows(arows, func(row pgx.CollectableRow) (placement.Assignment, error) {
		var a placement.Assignment
		return a, row.Scan(&a.Owner, &a.Node, &a.GPU, &a.Memory)
	})
	return snap, err
}

func (r *Reconciler) storeAssignment(ctx context.Context, model string, plan placement.Plan) error {
	return pgx.BeginFunc(ctx, r.DB, func(tx pgx.Tx) error {
		var depID int64
		if err := tx.QueryRow(ctx, `SELECT d.id FROM deployments d JOIN models m ON m.id = d.model_id WHERE m.name = $1`, model).Scan(&depID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM gpu_assignments WHERE deployment_id = $1`, depID); err != nil {
			return err
		}
		for _, a := range plan.Assignments {
			if _, err := tx.Exec(ctx, `INSERT INTO gpu_assignments (deployment_id, slot, node_id, gpu_uuid, memory_bytes) VALUES ($1, 0, $2, $3, $4)`,
				depID, a.Node, a.GPU, a.Memory); err != nil {
				return err
			}
		}
		return nil
	})
}
