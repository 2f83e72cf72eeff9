// Package placement decides where GPU replicas run. It is pure: an immutable
// snapshot of nodes, GPUs and the platform's own assignments goes in, a plan
// or a reason in words comes out. Feasibility is a chain of small filters
// (cheapest first), each able to say why it refused a node, as in swarmkit's
// scheduler; ranking is a bounded best-fit score, as in Nomad's. It knows
// nothing of Docker or Postgres.
package placement

import (
	"fmt"
	"sort"
	"strings"
)

// GPU is one device of a node's inventory.
type GPU struct {
	UUID  string
	Total int64 // bytes
	Free  int64 // bytes, as NVML reported
}

// Node is a Swarm node with its GPUs.
type Node struct {
	ID, Hostname string
	Available    bool // Swarm availability active and state ready
	// Drained: Swarm availability drain or pause, an operator's decision
	// (a node that is only down, say a power cut, is not drained).
	Drained bool
	Role    string // manager or worker
	Labels  map[string]string
	GPUs    []GPU
}

// Assignment is GPU memory the platform gave to one replica slot of a
// deployment.
type Assignment struct {
	Owner  string
	Slot   int
	Node   string
	GPU    string
	Memory int64
}

// Snapshot is the immutable input of a decision.
type Snapshot struct {
	Nodes    []Node
	Assigned []Assignment
}

// Request asks for GPUs for replicas that share them: each GPU needs
// Replicas × GPUMemory free. The scheduler places each replica on its own
// (Replicas 1, its Slot), avoiding the nodes of the deployment's other
// replicas (PlaceSpread).
type Request struct {
	Owner     string
	Slot      int
	Replicas  int
	GPUs      int
	GPUMemory int64
	Labels    map[string]string
	// Avoid lists node IDs refused (the nodes of the owner's other
	// replicas): PlaceSpread sets it and drops it when nothing else fits.
	Avoid []string
}

// Plan is a decision.
type Plan struct {
	Owner       string
	Node        string
	GPUs        []string
	Assignments []Assignment
}

// Policy chooses a plan for one request on a state; it does not change it.
type Policy interface {
	Place(st *State, r Request) (Plan, error)
}

// With returns a new snapshot that also holds plan's assignments.
func (s Snapshot) With(p Plan) Snapshot {
	a := make([]Assignment, 0, len(s.Assigned)+len(p.Assignments))
	a = append(a, s.Assigned...)
	a = append(a, p.Assignments...)
	return Snapshot{Nodes: s.Nodes, Assigned: a}
}

// Without returns a snapshot without the assignments drop says to drop.
func (s Snapshot) Without(drop func(Assignment) bool) Snapshot {
	a := make([]Assignment, 0, len(s.Assigned))
	for _, x := range s.Assigned {
		if !drop(x) {
			a = append(a, x)
		}
	}
	return Snapshot{Nodes: s.Nodes, Assigned: a}
}

// WithoutOwner returns a snapshot without owner's assignments.
func WithoutOwner(s Snapshot, owner string) Snapshot {
	return s.Without(func(a Assignment) bool { return a.Owner == owner })
}

// State is a snapshot being planned on: the nodes and what is still free on
// each GPU (free[node][gpu]). Placing updates it, so a stream of requests is
// planned without recomputing the snapshot.
type State struct {
	nodes []Node
	free  [][]int64
}

// NewState computes free memory: a GPU's total less whichever is larger, the
// platform's own assignments or what NVML sees used (running replicas show in
// both, so they are not counted twice).
func NewState(s Snapshot) *State {
	assigned := map[string]int64{}
	for _, a := range s.Assigned {
		assigned[a.Node+"/"+a.GPU] += a.Memory
	}
	st := &State{nodes: s.Nodes, free: make([][]int64, len(s.Nodes))}
	for i, n := range s.Nodes {
		st.free[i] = make([]int64, len(n.GPUs))
		for j, g := range n.GPUs {
			used := max(assigned[n.ID+"/"+g.UUID], g.Total-g.Free)
			st.free[i][j] = max(g.Total-used, 0)
		}
	}
	return st
}

// PlaceSpread places r away from others (the assignments of the
// deployment's other replicas): on a node none of them runs on when one fits
// (hard anti-affinity while the cluster allows it), else on a GPU none of
// them uses, else anywhere that fits: replicas of one deployment share a
// node, then a GPU, only when nothing else can take them. The error is the
// one without avoidance, which explains the whole cluster.
func (st *State) PlaceSpread(p Policy, r Request, others []Assignment) (Plan, error) {
	if len(others) > 0 {
		ra := r
		for _, a := range others {
			ra.Avoid = append(ra.Avoid, a.Node)
		}
		if pl, err := st.Place(p, ra); err == nil {
			return pl, nil
		}
		masked := &State{nodes: st.nodes, free: make([][]int64, len(st.free))}
		for i, n := range st.nodes {
			masked.free[i] = append([]int64(nil), st.free[i]...)
			for j, g := range n.GPUs {
				for _, a := range others {
					if a.Node == n.ID && a.GPU == g.UUID {
						masked.free[i][j] = 0
					}
				}
			}
		}
		if pl, err := p.Place(masked, r); err == nil {
			st.apply(pl)
			return pl, nil
		}
	}
	return st.Place(p, r)
}

// Place asks policy for a plan and applies it.
func (st *State) Place(p Policy, r Request) (Plan, error) {
	pl, err := p.Place(st, r)
	if err != nil {
		return Plan{}, err
	}
	st.apply(pl)
	return pl, nil
}

func (st *State) apply(p Plan) {
	for _, a := range p.Assignments {
		for i, n := range st.nodes {
			if n.ID != a.Node {
				continue
			}
			for j, g := range n.GPUs {
				if g.UUID == a.GPU {
					st.free[i][j] -= a.Memory
				}
			}
		}
	}
}

// Fits reports whether as (GPU memory on given nodes' GPUs, as an
// assignment would take it) fits in what is free on those GPUs, without
// taking it: whether a GPU has room for a second copy of a replica while
// a start-first update runs both.
func (st *State) Fits(as []Assignment) bool {
	need := map[[2]int]int64{}
	for _, a := range as {
		i, j := st.index(a.Node, a.GPU)
		if i < 0 {
			return false
		}
		need[[2]int{i, j}] += a.Memory
	}
	for k, n := range need {
		if st.free[k[0]][k[1]] < n {
			return false
		}
	}
	return true
}

// index is the position of node's GPU in the state (-1, -1: none).
func (st *State) index(node, gpu string) (int, int) {
	for i, n := range st.nodes {
		if n.ID != node {
			continue
		}
		for j, g := range n.GPUs {
			if g.UUID == gpu {
				return i, j
			}
		}
	}
	return -1, -1
}

// Used is the share of all GPU memory that is not free.
func (st *State) Used() float64 {
	var total, free int64
	for i, n := range st.nodes {
		for j, g := range n.GPUs {
			total += g.Total
			free += st.free[i][j]
		}
	}
	if total == 0 {
		return 0
	}
	return float64(total-free) / float64(total)
}

// Filter is one feasibility check of a node (by index in the state).
type Filter interface {
	Check(st *State, i int) bool
	// Explain says why nodes were refused, given how many were.
	Explain(refused int) string
}

type availableFilter struct{}

func (availableFilter) Check(st *State, i int) bool { return st.nodes[i].Available }
func (availableFilter) Explain(k int) string        { return fmt.Sprintf("%d node(s) not available", k) }

type labelFilter struct{ labels map[string]string }

func (f labelFilter) Check(st *State, i int) bool {
	for k, v := range f.labels {
		if st.nodes[i].Labels[k] != v {
			return false
		}
	}
	return true
}
func (f labelFilter) Explain(k int) string {
	return fmt.Sprintf("%d node(s) without labels %v", k, f.labels)
}

type avoidFilter struct{ nodes []string }

func (f avoidFilter) Check(st *State, i int) bool {
	for _, id := range f.nodes {
		if st.nodes[i].ID == id {
			return false
		}
	}
	return true
}
func (f avoidFilter) Explain(k int) string {
	return fmt.Sprintf("%d node(s) already running a replica", k)
}

type gpuCountFilter struct{ n int }

func (f gpuCountFilter) Check(st *State, i int) bool { return len(st.nodes[i].GPUs) >= f.n }
func (f gpuCountFilter) Explain(k int) string {
	return fmt.Sprintf("%d node(s) with fewer than %d GPU(s)", k, f.n)
}

type gpuMemoryFilter struct {
	need int64
	gpus int
}

func (f gpuMemoryFilter) Check(st *State, i int) bool {
	n := 0
	for _, free := range st.free[i] {
		if free >= f.need {
			n++
		}
	}
	return n >= f.gpus
}
func (f gpuMemoryFilter) Explain(k int) string {
	return fmt.Sprintf("%d node(s) without %d GPU(s) of %s free", k, f.gpus, HumanBytes(f.need))
}

// fitting lists node i's GPU indexes with at least need free, tightest first.
func (st *State) fitting(i int, need int64) []int {
	var out []int
	if len(st.free[i]) > 0 {
		out = make([]int, 0, len(st.free[i]))
	}
	for j, f := range st.free[i] {
		if f >= need {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(a, b int) bool {
		fa, fb := st.free[i][out[a]], st.free[i][out[b]]
		if fa != fb {
			return fa < fb
		}
		return out[a] < out[b]
	})
	return out
}

// feasible runs the filters, cheapest first, and returns the node indexes that
// pass, or an error that explains the refusals and names the largest free
// GPU memory.
func (st *State) feasible(r Request) ([]int, error) {
	if r.GPUs <= 0 || r.GPUMemory <= 0 || r.Replicas <= 0 {
		return nil, fmt.Errorf("a GPU request needs gpus, gpu memory and replicas above zero")
	}
	need := int64(r.Replicas) * r.GPUMemory
	filters := []Filter{availableFilter{}, labelFilter{r.Labels}, avoidFilter{r.Avoid}, gpuCountFilter{r.GPUs}, gpuMemoryFilter{need, r.GPUs}}
	refused := make([]int, len(filters))
	var ok []int
nodes:
	for i := range st.nodes {
		for k, f := range filters {
			if !f.Check(st, i) {
				refused[k]++
				continue nodes
			}
		}
		ok = append(ok, i)
	}
	if len(ok) > 0 {
		return ok, nil
	}
	var largest int64
	where := ""
	for i, n := range st.nodes {
		for _, f := range st.free[i] {
			if f > largest {
				largest, where = f, n.Hostname
			}
		}
	}
	var why []string
	for k, f := range filters {
		if refused[k] > 0 {
			why = append(why, f.Explain(refused[k]))
		}
	}
	msg := fmt.Sprintf("no node with %d GPU(s) of %s free GPU memory", r.GPUs, HumanBytes(need))
	if where != "" {
		msg += fmt.Sprintf("; largest free: %s on %s", HumanBytes(largest), where)
	} else {
		msg += "; no free GPU memory in the inventory"
	}
	return nil, fmt.Errorf("%s (%s)", msg, strings.Join(why, ", "))
}

func (st *State) plan(r Request, i int, gpus []int) Plan {
	n := st.nodes[i]
	p := Plan{Owner: r.Owner, Node: n.ID}
	for _, j := range gpus {
		p.GPUs = append(p.GPUs, n.GPUs[j].UUID)
		p.Assignments = append(p.Assignments, Assignment{Owner: r.Owner, Slot: r.Slot, Node: n.ID, GPU: n.GPUs[j].UUID, Memory: int64(r.Replicas) * r.GPUMemory})
	}
	return p
}

// BestFit picks the node and GPUs that leave the least free memory behind,
// so that large models still find whole GPUs later.
type BestFit struct{}

// Place implements Policy.
func (BestFit) Place(st *State, r Request) (Plan, error) {
	nodes, err := st.feasible(r)
	if err != nil {
		return Plan{}, err
	}
	need := int64(r.Replicas) * r.GPUMemory
	best, bestLeft := -1, int64(-1)
	var bestGPUs []int
	one := make([]int, 1)
	for _, i := range nodes {
		var gpus []int
		if r.GPUs == 1 {
			// the common case, without sorting: the tightest GPU that fits
			one[0] = -1
			for j, f := range st.free[i] {
				if f >= need && (one[0] < 0 || f < st.free[i][one[0]]) {
					one[0] = j
				}
			}
			gpus = one
		} else {
			gpus = st.fitting(i, need)[:r.GPUs]
		}
		var left int64
		for _, j := range gpus {
			left += st.free[i][j] - need
		}
		if best < 0 || left < bestLeft {
			best, bestLeft, bestGPUs = i, left, append([]int(nil), gpus...)
		}
	}
	return st.plan(r, best, bestGPUs), nil
}

// Spread is Swarm-like: the node and GPUs with the most free memory.
type Spread struct{}

// Place implements Policy.
func (Spread) Place(st *State, r Request) (Plan, error) {
	nodes, err := st.feasible(r)
	if err != nil {
		return Plan{}, err
	}
	need := int64(r.Replicas) * r.GPUMemory
	best, bestFree := -1, int64(-1)
	var bestGPUs []int
	for _, i := range nodes {
		fit := st.fitting(i, need)
		gpus := fit[len(fit)-r.GPUs:]
		var f int64
		for _, j := range gpus {
			f += st.free[i][j]
		}
		if f > bestFree {
			best, bestFree, bestGPUs = i, f, gpus
		}
	}
	return st.plan(r, best, bestGPUs), nil
}

// HumanBytes prints GiB with one decimal (or MiB below a GiB).
func HumanBytes(b int64) string {
	if b >= 1<<30 {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(b)/(1<<30)), ".0") + " GiB"
	}
	return fmt.Sprintf("%d MiB", b>>20)
}
