package scheduler

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Service is a managed Swarm service as a reconcile pass sees it.
type Service struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Model is the deployment's key (deployment.Key: the model's name, or
	// name_canary for its canary), from its labels.
	Model    string `json:"model,omitempty"`
	SpecHash string `json:"spec_hash"`
	Replicas uint64 `json:"replicas"`
	Backend  string `json:"backend,omitempty"` // the engine it runs, from its label
	Version  int    `json:"version,omitempty"` // the model version it runs, from its label
	// Updating: Swarm is rolling it (its update status updating or
	// rollback_started), which a stop-first roll of another replica of its
	// model waits for (placeGPUs).
	Updating bool `json:"updating,omitempty"`
}

// serviceOf reads what Diff compares from a listed service, at now.
func serviceOf(s swarm.Service, now time.Time) Service {
	l := s.Spec.Annotations.Labels
	return Service{ID: s.ID, Name: s.Spec.Annotations.Name, Model: deployment.Key(l[LabelModel], l[LabelTrack]), SpecHash: l[LabelSpecHash], Replicas: replicas(s.Spec),
		Backend: l[LabelBackend], Version: atoiOr0(l[LabelVersion]), Updating: updating(s, now)}
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// updatePending is how long after a spec write a service whose update
// status does not say it started yet counts as being rolled.
const updatePending = 30 * time.Second

// updating reports whether Swarm is rolling s: its update status says so,
// or its spec was written (within updatePending) and its updater has not
// set the status yet (none, or an earlier update's completion from before
// the write), the moment right after a pass updated it.
func updating(s swarm.Service, now time.Time) bool {
	u := s.UpdateStatus
	if u != nil && (u.State == swarm.UpdateStateUpdating || u.State == swarm.UpdateStateRollbackStarted) {
		return true
	}
	if s.PreviousSpec == nil || now.Sub(s.UpdatedAt) > updatePending {
		return false
	}
	// the updater's own status write moves UpdatedAt a moment past CompletedAt
	return u == nil || (u.CompletedAt != nil && s.UpdatedAt.Sub(*u.CompletedAt) > time.Second)
}

// Plan is what one reconcile pass does, decided before anything is done:
// Diff computes it, apply carries it out, `nlpswarm status --plan` shows it.
type Plan struct {
	// GPUFrees are models whose GPU assignments are given back: the
	// deployment is gone, runs no GPU any more, or is at zero replicas.
	GPUFrees []string `json:"gpu_frees"`
	// GPUAssigns are GPU deployments whose replica slots changed (a replica
	// placed anew: a new deployment, a changed request, a scale up, one back
	// from zero, a replica whose node was lost or drained; or slots given
	// back by a scale down): each lists every slot it holds after the pass.
	GPUAssigns []GPUAssign `json:"gpu_assigns"`
	// Unplaceable deployments are left as they are (their service, if any,
	// untouched), with placement's reason, or the engine's (ort asked for
	// with no ORT image).
	Unplaceable []Unplaceable `json:"unplaceable"`
	// Short are GPU deployments placed in part: the replicas that fit run,
	// the reason says why the others do not.
	Short   []Unplaceable `json:"short"`
	Creates []Change      `json:"creates"`
	Updates []Change      `json:"updates"`
	// Removes are managed services no deployment wants (undeployed models,
	// leftovers of ours).
	Removes   []Removal `json:"removes"`
	Unchanged []string  `json:"unchanged"` // models whose service is as desired
	// Deferred are GPU replica services whose rolling update waits: it
	// must be stop-first (no GPU has room for a second copy) and another
	// replica of the model is being rolled (placeGPUs). A later pass rolls
	// them; nothing is done to them in this one.
	Deferred []Removal `json:"deferred"`

	// services names each placed deployment's services (one, or one per GPU
	// replica slot), which observe reads.
	services map[string][]string
}

// GPUAssign is the GPU side of a deployment after a pass: every replica
// slot it holds (New where placed by this pass) and their assignments,
// which replace the deployment's.
type GPUAssign struct {
	Model       string                     `json:"model"`
	Replicas    []Pin                      `json:"replicas"`
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
	SpecChanged bool `json:"spec_changed"`
	// StopFirst: this update stops the old task before it starts the new
	// one (a GPU replica rolled where no GPU has room for a second copy:
	// placeGPUs); apply sends the spec with that update order, its hash
	// label unchanged (the order is how this update runs, not what the
	// service is).
	StopFirst   bool               `json:"stop_first,omitempty"`
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
	return len(p.GPUFrees)+len(p.GPUAssigns)+len(p.Unplaceable)+len(p.Short)+len(p.Creates)+len(p.Updates)+len(p.Removes) == 0
}

// short is why some of model's GPU replicas could not be placed ("": all
// were).
func (p Plan) short(model string) string {
	for _, u := range p.Short {
		if u.Model == model {
			return u.Reason
		}
	}
	return ""
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
	p := Plan{GPUFrees: []string{}, GPUAssigns: []GPUAssign{}, Unplaceable: []Unplaceable{}, Short: []Unplaceable{}, Creates: []Change{},
		Updates: []Change{}, Removes: []Removal{}, Unchanged: []string{}, Deferred: []Removal{}, services: map[string][]string{}}
	p.refuse(desired, inv.Nodes, c)
	existing := map[string]Service{}
	for _, s := range services {
		existing[s.Name] = s
	}
	// rolls: the slot's service exists and its spec, pinned where it runs,
	// differs (a new version, image, credential...): a rolling update
	rolls := func(d deployment.Desired, pin Pin) bool {
		svc := existing[GroupServiceName(d.Key(), pin.Slot)]
		return svc.ID != "" && svc.SpecHash != BuildSpec(Desired{Desired: d, Pin: &pin}, c).Annotations.Labels[LabelSpecHash]
	}
	updating := func(model string, slot int) string {
		for _, s := range services {
			if s.Model == model && s.Updating && s.Name != GroupServiceName(model, slot) {
				return s.Name
			}
		}
		return ""
	}
	pins := p.placeGPUs(desired, inv, rolls, updating)
	want := map[string]bool{}
	gpuReplicas := map[string]int{}
	for _, d := range desired {
		if p.unplaceable(d.Key()) {
			// left as it is: every service it has
			for _, s := range services {
				if s.Name == ServiceName(d.Key()) || s.Model == d.Key() {
					want[s.Name] = true
				}
			}
			continue
		}
		var specs []Desired
		if d.GPUs > 0 {
			gpuReplicas[d.Key()] = d.Replicas
			for i := range pins[d.Key()] {
				specs = append(specs, Desired{Desired: d, Pin: &pins[d.Key()][i]})
			}
		} else {
			specs = []Desired{{Desired: d, MaxPerNode: MaxPerNode(d.Replicas, EligibleNodes(d, inv.Nodes, c.PlacementConstraint))}}
		}
		changed := false
		for _, sd := range specs {
			name := ServiceName(d.Key())
			if sd.Pin != nil {
				name = GroupServiceName(d.Key(), sd.Pin.Slot)
			}
			want[name] = true
			p.services[d.Key()] = append(p.services[d.Key()], name)
			if sd.Pin != nil && sd.Pin.Roll == RollDeferred {
				p.Deferred = append(p.Deferred, Removal{Service: name, ServiceID: existing[name].ID, Why: sd.Pin.Why})
				changed = true
				continue
			}
			changed = p.diffService(sd, name, existing[name], c) || changed
		}
		if !changed {
			p.Unchanged = append(p.Unchanged, d.Key())
		}
	}
	for _, s := range services {
		if want[s.Name] {
			continue
		}
		why := "no deployment wants it"
		if n, ok := gpuReplicas[s.Model]; ok {
			why = fmt.Sprintf("replica service not wanted: %s runs %d GPU replica(s)", s.Model, n)
		}
		p.Removes = append(p.Removes, Removal{Service: s.Name, ServiceID: s.ID, Why: why})
	}
	sort.Slice(p.Removes, func(i, j int) bool { return p.Removes[i].Service < p.Removes[j].Service })
	return p
}

// diffService adds the create or update that brings svc (zero: none) to
// d's spec, and reports whether it did.
func (p *Plan) diffService(d Desired, name string, svc Service, c SpecConfig) bool {
	spec := BuildSpec(d, c)
	reps := int(replicas(spec))
	ch := Change{Model: d.Key(), Service: name, Version: d.Version, Replicas: reps,
		SpecHash: spec.Annotations.Labels[LabelSpecHash], Backend: spec.Annotations.Labels[LabelBackend], Spec: spec, Desired: d.Desired}
	where := ""
	if d.Pin != nil {
		where = fmt.Sprintf(" pinned to node %s GPU %s", d.Pin.NodeID, strings.Join(d.Pin.GPUUUIDs, ","))
	}
	if svc.ID == "" {
		ch.Why = fmt.Sprintf("new: version %d, %d replica(s) on %s%s", d.Version, reps, ch.Backend, where)
		p.Creates = append(p.Creates, ch)
		return true
	}
	ch.ServiceID, ch.FromReplicas, ch.FromSpecHash, ch.FromBackend = svc.ID, int(svc.Replicas), svc.SpecHash, svc.Backend
	ch.SpecChanged = svc.SpecHash != ch.SpecHash
	if !ch.SpecChanged && svc.Replicas == uint64(reps) {
		return false
	}
	ch.ScaleToZero = reps == 0 && svc.Replicas > 0
	// a canary's service taking a new version (a new canary within the
	// previous one's drain) rolls stop-first: the new canary gets no
	// traffic until its service runs it (deployment.Routable), so no task
	// of the previous version answers under its name meanwhile
	canaryTakeover := d.Track == deployment.TrackCanary && svc.Version != 0 && svc.Version != d.Version
	ch.StopFirst = ch.SpecChanged && (d.Pin != nil && d.Pin.Roll == RollStopFirst || canaryTakeover)
	switch {
	case ch.SpecChanged && d.Pin != nil && d.Pin.Roll != RollInPlace && d.Pin.Roll != "":
		ch.Why = fmt.Sprintf("spec changed (%s → %s): rolling update %s%s: %s", svc.SpecHash, ch.SpecHash, d.Pin.Roll, where, d.Pin.Why)
	case ch.SpecChanged && svc.Replicas != uint64(reps):
		ch.Why = fmt.Sprintf("spec changed (%s → %s) and replicas %d → %d", svc.SpecHash, ch.SpecHash, svc.Replicas, reps)
	case ch.SpecChanged && svc.Backend != "" && svc.Backend != ch.Backend:
		ch.Why = fmt.Sprintf("backend %s → %s (spec %s → %s): rolling update", svc.Backend, ch.Backend, svc.SpecHash, ch.SpecHash)
	case ch.SpecChanged && d.Pin != nil && d.Pin.New:
		ch.Why = fmt.Sprintf("re-placed%s (spec %s → %s): rolling update", where, svc.SpecHash, ch.SpecHash)
	case ch.SpecChanged:
		ch.Why = fmt.Sprintf("spec changed (%s → %s): rolling update", svc.SpecHash, ch.SpecHash)
	case ch.ScaleToZero:
		ch.Why = fmt.Sprintf("scale to zero (from %d)", svc.Replicas)
	default:
		ch.Why = fmt.Sprintf("replicas %d → %d", svc.Replicas, reps)
	}
	p.Updates = append(p.Updates, ch)
	return true
}

// refuse marks unplaceable the deployments whose engine cannot be had (ort
// with no ORT image, a generation model with no generation image of its
// kind: EngineOf) and the generation models too large for any GPU
// (GPUTooSmall): like one placement refuses, a refused one keeps its
// service, if any, and the GPUs it holds as they are.
func (p *Plan) refuse(desired []deployment.Desired, nodes []placement.Node, c SpecConfig) {
	for _, d := range desired {
		_, err := c.EngineOf(d)
		if err == nil {
			err = GPUTooSmall(d, nodes)
		}
		if err != nil {
			p.Unplaceable = append(p.Unplaceable, Unplaceable{Model: d.Key(), Reason: err.Error(), Generation: d.Generation})
		}
	}
}

// placeGPUs decides the GPU side of p, one replica slot at a time (each
// GPU replica is a service of its own: doc.go, "GPU replicas"). It frees
// the assignments of deployments that run no GPU replica any more (gone, on
// CPU, at zero). Of a running GPU deployment, a slot keeps what it holds
// while that still fits the request (as many GPUs, each with the
// deployment's GPU memory) on an available node; slots beyond the replica
// count are given back; the others are placed by best fit, avoiding the
// nodes of the deployment's other replicas while another node can take
// them, then the GPUs they use (placement.PlaceSpread). A slot whose node is lost or drained keeps
// what it held when nothing else fits (its replica waits for the node). A
// deployment none of whose replicas can be placed is unplaceable (its
// services left as they are); one placed in part is Short. It returns each
// placed deployment's pins, by slot.
//
// A slot that keeps its GPUs but whose service rolls (rolls: a new version,
// image...) needs, for Swarm's start-first update, room for a second copy
// of the model beside the running one while both run: on its own GPUs
// when they have it (RollInPlace), else the slot is placed anew where there
// is (RollMoved, its old GPUs kept busy for the rest of the pass), else it
// rolls stop-first on its own GPUs, one replica of the model at a time
// (RollStopFirst; RollDeferred while another of its services is being
// rolled, updating names it). The second copies are held for the rest of
// the pass, so two rolls never count on the same room; they are not
// written to the inventory (they last one start-first update).
func (p *Plan) placeGPUs(desired []deployment.Desired, inv placement.Snapshot, rolls func(deployment.Desired, Pin) bool,
	updating func(model string, slot int) string) map[string][]Pin {
	keep := map[string]bool{}
	for _, d := range desired {
		if d.GPUs > 0 && d.Replicas > 0 {
			keep[d.Key()] = true
		}
	}
	available := map[string]bool{}
	for _, n := range inv.Nodes {
		available[n.ID] = n.Available
	}
	held := map[string]map[int][]placement.Assignment{}
	freed := map[string]bool{}
	for _, a := range inv.Assigned {
		if !keep[a.Owner] {
			freed[a.Owner] = true
			continue
		}
		if held[a.Owner] == nil {
			held[a.Owner] = map[int][]placement.Assignment{}
		}
		held[a.Owner][a.Slot] = append(held[a.Owner][a.Slot], a)
	}
	for m := range freed {
		p.GPUFrees = append(p.GPUFrees, m)
	}
	sort.Strings(p.GPUFrees)
	snap := inv.Without(func(a placement.Assignment) bool { return freed[a.Owner] })
	// transient is GPU memory busy for this pass only: second copies of
	// rolling replicas, GPUs of moved ones whose old task still runs
	var transient []placement.Assignment
	busy := func(s placement.Snapshot) placement.Snapshot {
		return placement.Snapshot{Nodes: s.Nodes, Assigned: append(append([]placement.Assignment(nil), s.Assigned...), transient...)}
	}
	pins := map[string][]Pin{}
	for _, d := range desired {
		if !keep[d.Key()] || p.unplaceable(d.Key()) {
			continue
		}
		h := held[d.Key()]
		changed := false
		for slot := range h {
			changed = changed || slot >= d.Replicas
		}
		snap = snap.Without(func(a placement.Assignment) bool { return a.Owner == d.Key() && a.Slot >= d.Replicas })
		fits := func(as []placement.Assignment) bool {
			if len(as) != d.GPUs || !available[as[0].Node] {
				return false
			}
			for _, a := range as {
				if a.Memory != d.GPUMemory || a.Node != as[0].Node {
					return false
				}
			}
			return true
		}
		var others []placement.Assignment
		for slot := 0; slot < d.Replicas; slot++ {
			if fits(h[slot]) {
				others = append(others, h[slot]...)
			}
		}
		var out []Pin
		reason := ""
		stopFirst := false // one stop-first roll per deployment and pass
		req := func(slot int) placement.Request {
			return placement.Request{Owner: d.Key(), Slot: slot, Replicas: 1, GPUs: d.GPUs, GPUMemory: d.GPUMemory, Labels: d.Labels}
		}
		for slot := 0; slot < d.Replicas; slot++ {
			if fits(h[slot]) {
				pin := pinOf(slot, h[slot])
				if rolls(d, pin) {
					surge := make([]placement.Assignment, len(h[slot]))
					for i, a := range h[slot] {
						surge[i] = placement.Assignment{Owner: d.Key() + " (rolling)", Slot: slot, Node: a.Node, GPU: a.GPU, Memory: d.GPUMemory}
					}
					switch st := placement.NewState(busy(snap)); {
					case st.Fits(surge):
						pin.Roll, pin.Why = RollInPlace, "its GPU has room for a second copy"
						transient = append(transient, surge...)
					default:
						moved, err := st.PlaceSpread(placement.BestFit{}, req(slot), others)
						if err == nil {
							// the old task runs until the new one does: its
							// GPUs stay busy for the rest of the pass
							transient = append(transient, h[slot]...)
							snap = snap.Without(func(a placement.Assignment) bool { return a.Owner == d.Key() && a.Slot == slot }).With(moved)
							others = append(others, moved.Assignments...)
							changed = true
							out = append(out, Pin{Slot: slot, NodeID: moved.Node, GPUUUIDs: moved.GPUs, New: true, Roll: RollMoved,
								Why: fmt.Sprintf("GPU %s has no room for a second copy of %s", strings.Join(pin.GPUUUIDs, ","), placement.HumanBytes(d.GPUMemory))})
							continue
						}
						if busyWith := updating(d.Key(), slot); busyWith != "" || stopFirst {
							if busyWith == "" {
								busyWith = "another replica rolled stop-first in this pass"
							} else {
								busyWith += " is being rolled"
							}
							pin.Roll, pin.Why = RollDeferred, "no GPU has room for a second copy, so it rolls stop-first, after the others: "+busyWith
						} else {
							pin.Roll, pin.Why, stopFirst = RollStopFirst, "no GPU has room for a second copy of "+placement.HumanBytes(d.GPUMemory), true
						}
					}
				}
				out = append(out, pin)
				continue
			}
			trial := snap.Without(func(a placement.Assignment) bool { return a.Owner == d.Key() && a.Slot == slot })
			pl, err := placement.NewState(busy(trial)).PlaceSpread(placement.BestFit{}, req(slot), others)
			if err != nil {
				if len(h[slot]) > 0 {
					out = append(out, pinOf(slot, h[slot]))
					others = append(others, h[slot]...)
				} else if reason == "" {
					reason = err.Error()
				}
				continue
			}
			pin := Pin{Slot: slot, NodeID: pl.Node, GPUUUIDs: pl.GPUs, New: true}
			// a changed request placed back on a GPU its old task still
			// runs on (its node available) rolls with both there: room for
			// both, else elsewhere, else stop-first (as a held slot's roll)
			if len(h[slot]) > 0 && available[h[slot][0].Node] && sharesGPU(pl.Assignments, h[slot]) && rolls(d, pin) &&
				!placement.NewState(busy(trial.With(pl))).Fits(h[slot]) {
				why := fmt.Sprintf("GPU %s has no room for the new replica beside the old one", strings.Join(pin.GPUUUIDs, ","))
				old := append(append([]placement.Assignment(nil), transient...), h[slot]...)
				if moved, err := placement.NewState(placement.Snapshot{Nodes: trial.Nodes, Assigned: append(append([]placement.Assignment(nil), trial.Assigned...), old...)}).
					PlaceSpread(placement.BestFit{}, req(slot), others); err == nil {
					transient, pl = old, moved
					pin = Pin{Slot: slot, NodeID: pl.Node, GPUUUIDs: pl.GPUs, New: true, Roll: RollMoved, Why: why}
				} else if busyWith := updating(d.Key(), slot); busyWith != "" || stopFirst {
					held := pinOf(slot, h[slot])
					held.Roll, held.Why = RollDeferred, why+"; no GPU has room, so it rolls stop-first, after the others"
					out = append(out, held)
					others = append(others, h[slot]...)
					continue
				} else {
					pin.Roll, pin.Why, stopFirst = RollStopFirst, why+" and no GPU has room elsewhere", true
				}
			}
			snap, changed = trial.With(pl), true
			out = append(out, pin)
			others = append(others, pl.Assignments...)
		}
		if len(out) == 0 {
			p.Unplaceable = append(p.Unplaceable, Unplaceable{Model: d.Key(), Reason: reason, Generation: d.Generation})
			continue
		}
		if reason != "" {
			p.Short = append(p.Short, Unplaceable{Model: d.Key(), Generation: d.Generation,
				Reason: fmt.Sprintf("%d of %d replicas placed; the others: %s", len(out), d.Replicas, reason)})
		}
		pins[d.Key()] = out
		if changed {
			ga := GPUAssign{Model: d.Key(), Replicas: out}
			for _, pin := range out {
				for _, g := range pin.GPUUUIDs {
					ga.Assignments = append(ga.Assignments, deployment.GPUAssignment{Model: d.Key(), Slot: pin.Slot, Node: pin.NodeID, GPU: g, Memory: d.GPUMemory})
				}
			}
			p.GPUAssigns = append(p.GPUAssigns, ga)
		}
	}
	return pins
}

// sharesGPU reports whether a and b use a GPU in common.
func sharesGPU(a, b []placement.Assignment) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Node == y.Node && x.GPU == y.GPU {
				return true
			}
		}
	}
	return false
}

// pinOf is the pin of a slot's held assignments.
func pinOf(slot int, as []placement.Assignment) Pin {
	pin := Pin{Slot: slot, NodeID: as[0].Node}
	for _, a := range as {
		pin.GPUUUIDs = append(pin.GPUUUIDs, a.GPU)
	}
	return pin
}
