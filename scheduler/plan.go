package scheduler

import (
	"fmt"
	"slices"
	"sort"

	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Service is a managed Swarm service as a reconcile pass sees it.
type Service struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	SpecHash string `json:"spec_hash"`
	Replicas uint64 `json:"replicas"`
	Backend  string `json:"backend,omitempty"` // the engine it runs, from its label
}

// serviceOf reads what Diff compares from a listed service.
func serviceOf(s swarm.Service) Service {
	return Service{ID: s.ID, Name: s.Spec.Annotations.Name, SpecHash: s.Spec.Annotations.Labels[LabelSpecHash], Replicas: replicas(s.Spec),
		Backend: s.Spec.Annotations.Labels[LabelBackend]}
}

// Plan is what one reconcile pass does, decided before anything is done:
// Diff computes it, apply carries it out, `nlpswarm status --plan` shows it.
type Plan struct {
	// GPUFrees are models whose GPU assignments are given back: the
	// deployment is gone, runs no GPU any more, or is at zero replicas.
	GPUFrees []string `json:"gpu_frees"`
	// GPUAssigns are new placements of GPU deployments (a new one, a changed
	// request, one back from zero).
	GPUAssigns []GPUAssign `json:"gpu_assigns"`
	// Unplaceable deployments are left as they are (their service, if any,
	// untouched), with placement's reason, or the engine's (ort asked for
	// with no ORT image).
	Unplaceable []Unplaceable `json:"unplaceable"`
	Creates     []Change      `json:"creates"`
	Updates     []Change      `json:"updates"`
	// Removes are managed services no deployment wants (undeployed models,
	// leftovers of ours).
	Removes   []Removal `json:"removes"`
	Unchanged []string  `json:"unchanged"` // models whose service is as desired
}

// GPUAssign is a GPU deployment placed anew.
type GPUAssign struct {
	Model       string                     `json:"model"`
	Node        string                     `json:"node"`
	GPUs        []string                   `json:"gpus"`
	Assignments []deployment.GPUAssignment `json:"assignments"`
}

// Unplaceable is a deployment placement refused, with its reason.
type Unplaceable struct {
	Model      string `json:"model"`
	Reason     string `json:"reason"`
	Generation int64  `json:"generation"`
}

// Change is a service to create or update.
type Change struct {
	Model        string `json:"model"`
	Service      string `json:"service"`
	ServiceID    string `json:"service_id,omitempty"` // updates
	Version      int    `json:"version"`
	Replicas     int    `json:"replicas"`
	FromReplicas int    `json:"from_replicas"` // updates
	SpecHash     string `json:"spec_hash"`
	FromSpecHash string `json:"from_spec_hash,omitempty"` // updates
	// Backend is the engine the replicas will run (the deployment's, or the
	// platform's default resolved); FromBackend the one they run (updates).
	Backend     string `json:"backend"`
	FromBackend string `json:"from_backend,omitempty"`
	// SpecChanged: image, env, resources, placement or version differ (a
	// rolling update); otherwise only the replica count changes.
	SpecChanged bool               `json:"spec_changed"`
	ScaleToZero bool               `json:"scale_to_zero"`
	Why         string             `json:"why"`
	Spec        swarm.ServiceSpec  `json:"-"`
	Desired     deployment.Desired `json:"-"`
}

// Removal is a service to remove.
type Removal struct {
	Service   string `json:"service"`
	ServiceID string `json:"service_id"`
	Why       string `json:"why"`
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool {
	return len(p.GPUFrees)+len(p.GPUAssigns)+len(p.Unplaceable)+len(p.Creates)+len(p.Updates)+len(p.Removes) == 0
}

// unplaceable reports whether model's deployment cannot be placed.
func (p Plan) unplaceable(model string) bool {
	for _, u := range p.Unplaceable {
		if u.Model == model {
			return true
		}
	}
	return false
}

// Diff is the pure decision of a reconcile pass: from the desired
// deployments, the managed services Swarm has, and the inventory (nodes,
// GPUs, and the GPU assignments held), what to free, place, create, update
// and remove. It touches nothing; services and assignments are matched by
// model name.
func Diff(desired []deployment.Desired, services []Service, inv placement.Snapshot, c SpecConfig) Plan {
	p := Plan{GPUFrees: []string{}, GPUAssigns: []GPUAssign{}, Unplaceable: []Unplaceable{}, Creates: []Change{},
		Updates: []Change{}, Removes: []Removal{}, Unchanged: []string{}}
	p.refuseEngines(desired, c)
	pins := p.placeGPUs(desired, inv)
	existing := map[string]Service{}
	for _, s := range services {
		existing[s.Name] = s
	}
	want := map[string]bool{}
	for _, d := range desired {
		name := ServiceName(d.Model)
		want[name] = true
		if p.unplaceable(d.Model) {
			continue
		}
		spec := BuildSpec(Desired{Desired: d, Pin: pins[d.Model]}, c)
		ch := Change{Model: d.Model, Service: name, Version: d.Version, Replicas: d.Replicas,
			SpecHash: spec.Annotations.Labels[LabelSpecHash], Backend: spec.Annotations.Labels[LabelBackend], Spec: spec, Desired: d}
		svc, ok := existing[name]
		if !ok {
			ch.Why = fmt.Sprintf("new: version %d, %d replica(s) on %s", d.Version, d.Replicas, ch.Backend)
			p.Creates = append(p.Creates, ch)
			continue
		}
		ch.ServiceID, ch.FromReplicas, ch.FromSpecHash, ch.FromBackend = svc.ID, int(svc.Replicas), svc.SpecHash, svc.Backend
		ch.SpecChanged = svc.SpecHash != ch.SpecHash
		if !ch.SpecChanged && svc.Replicas == uint64(d.Replicas) {
			p.Unchanged = append(p.Unchanged, d.Model)
			continue
		}
		ch.ScaleToZero = d.Replicas == 0 && svc.Replicas > 0
		switch {
		case ch.SpecChanged && svc.Replicas != uint64(d.Replicas):
			ch.Why = fmt.Sprintf("spec changed (%s → %s) and replicas %d → %d", svc.SpecHash, ch.SpecHash, svc.Replicas, d.Replicas)
		case ch.SpecChanged && svc.Backend != "" && svc.Backend != ch.Backend:
			ch.Why = fmt.Sprintf("backend %s → %s (spec %s → %s): rolling update", svc.Backend, ch.Backend, svc.SpecHash, ch.SpecHash)
		case ch.SpecChanged:
			ch.Why = fmt.Sprintf("spec changed (%s → %s): rolling update", svc.SpecHash, ch.SpecHash)
		case ch.ScaleToZero:
			ch.Why = fmt.Sprintf("scale to zero (from %d)", svc.Replicas)
		default:
			ch.Why = fmt.Sprintf("replicas %d → %d", svc.Replicas, d.Replicas)
		}
		p.Updates = append(p.Updates, ch)
	}
	for _, s := range services {
		if !want[s.Name] {
			p.Removes = append(p.Removes, Removal{Service: s.Name, ServiceID: s.ID, Why: "no deployment wants it"})
		}
	}
	sort.Slice(p.Removes, func(i, j int) bool { return p.Removes[i].Service < p.Removes[j].Service })
	return p
}

// refuseEngines marks unplaceable the deployments whose engine cannot be had
// (ort with no ORT image): like one placement refuses, a refused one keeps
// its service, if any, and the GPUs it holds as they are.
func (p *Plan) refuseEngines(desired []deployment.Desired, c SpecConfig) {
	for _, d := range desired {
		if _, err := c.Engine(d.Backend); err != nil {
			p.Unplaceable = append(p.Unplaceable, Unplaceable{Model: d.Model, Reason: err.Error(), Generation: d.Generation})
		}
	}
}

// placeGPUs decides the GPU side of p: it frees the assignments no running
// GPU deployment holds, keeps those that still fit their deployment's
// request, and places the others by best fit (a changed request gives back
// what it held first). It returns each placed deployment's pin.
func (p *Plan) placeGPUs(desired []deployment.Desired, inv placement.Snapshot) map[string]*Pin {
	keep := map[string]bool{}
	for _, d := range desired {
		if d.GPUs > 0 && d.Replicas > 0 {
			keep[d.Model] = true
		}
	}
	snap := inv
	held := map[string][]placement.Assignment{}
	for _, a := range inv.Assigned {
		if keep[a.Owner] {
			held[a.Owner] = append(held[a.Owner], a)
		} else if !slices.Contains(p.GPUFrees, a.Owner) {
			p.GPUFrees = append(p.GPUFrees, a.Owner)
			snap = placement.WithoutOwner(snap, a.Owner)
		}
	}
	sort.Strings(p.GPUFrees)
	pins := map[string]*Pin{}
	for _, d := range desired {
		if !keep[d.Model] || p.unplaceable(d.Model) {
			continue
		}
		need := int64(d.Replicas) * d.GPUMemory
		if a := held[d.Model]; len(a) == d.GPUs && a[0].Memory == need {
			pin := &Pin{NodeID: a[0].Node}
			for _, x := range a {
				pin.GPUUUIDs = append(pin.GPUUUIDs, x.GPU)
			}
			pins[d.Model] = pin
			continue
		}
		snap = placement.WithoutOwner(snap, d.Model)
		pl, err := placement.NewState(snap).Place(placement.BestFit{},
			placement.Request{Owner: d.Model, Replicas: d.Replicas, GPUs: d.GPUs, GPUMemory: d.GPUMemory, Labels: d.Labels})
		if err != nil {
			p.Unplaceable = append(p.Unplaceable, Unplaceable{Model: d.Model, Reason: err.Error(), Generation: d.Generation})
			continue
		}
		snap = snap.With(pl)
		pins[d.Model] = &Pin{NodeID: pl.Node, GPUUUIDs: pl.GPUs}
		ga := GPUAssign{Model: d.Model, Node: pl.Node, GPUs: pl.GPUs}
		for _, a := range pl.Assignments {
			ga.Assignments = append(ga.Assignments, deployment.GPUAssignment{Model: d.Model, Node: a.Node, GPU: a.GPU, Memory: a.Memory})
		}
		p.GPUAssigns = append(p.GPUAssigns, ga)
	}
	return pins
}
