package chaos

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nlpswarm/nlpswarm/internal/swarmlab"
)

// gpuDeploy is the GPU deployment the GPU scenarios hold: three replicas of
// one GPU each, 4 GiB of a fake 16 GiB GPU, so that a node's replicas fit on
// the other worker's two GPUs after it is lost.
var gpuDeploy = []string{"deploy", "sentiment", "--replicas", "3", "--memory", "256M", "--gpus", "1", "--gpu-memory", "4G"}

// gpuNodes are the lab nodes whose agents report two fake GPUs in
// TestChaosGPU: both workers.
var gpuNodes = []int{2, 3}

// TestChaosGPU runs issue 16's GPU scenarios on the three-node lab with two
// fake 16 GiB GPUs on each worker (their agents, the nlpswarm-agent image,
// read them from the lab's file): a 3-replica 1-GPU model spread over GPUs
// of both workers, a drain and a power cut of the worker holding most of
// its replicas under load through the gateway, rolling updates to a new
// version under load (room on each GPU; full GPUs with free ones elsewhere;
// every GPU full), and GPU autoscaling up, down, to zero and back. Opt-in:
// NLPSWARM_CHAOS_GPU=1 (make chaos-gpu), root, about 8 minutes;
// NLPSWARM_CHAOS_REPORT=FILE also writes the table.
func TestChaosGPU(t *testing.T) {
	optIn(t, "NLPSWARM_CHAOS_GPU", "the GPU chaos scenarios (about 4 minutes)")
	s := startStack(t, gpuNodes...)
	rep := &report{}
	rep.logAtEnd(t)
	s.mustCLI("models", "create", "sentiment", "--task", "text-classification")
	s.mustCLI("models", "push", "sentiment", filepath.Join(s.fixtures, "sentiment"))
	s.waitFakeGPUs(t, gpuNodes...)
	s.runScenarios(t, rep, []scenario{
		{"Spread", scenarioGPUSpread},
		{"Drain", scenarioGPUDrain},
		{"WorkerPowerCut", scenarioGPUPowerCut},
		{"RollingUpdate", scenarioGPURoll(3, "4G")},
		{"RollingUpdateFullGPU", scenarioGPURoll(2, "16G")},
		{"RollingUpdateFullCluster", scenarioGPURoll(4, "16G")},
		{"Autoscale", scenarioGPUAutoscale},
	})
}

// inventory is the part of GET /api/v1/nodes the GPU scenarios read.
type inventory struct {
	Nodes []struct {
		ID       string `json:"id"`
		Hostname string `json:"hostname"`
		GPUs     []struct {
			UUID   string `json:"uuid"`
			Placed []struct {
				Model       string `json:"model"`
				MemoryBytes int64  `json:"memory_bytes"`
			} `json:"placed"`
		} `json:"gpus"`
	} `json:"nodes"`
}

func (s *stack) inventory() inventory {
	s.t.Helper()
	var inv inventory
	s.apiJSON("GET", "/api/v1/nodes", nil, &inv, 200)
	return inv
}

// placed is the GPU memory the inventory shows assigned to model, by
// "hostname/GPU uuid".
func (inv inventory) placed(model string) map[string]int64 {
	out := map[string]int64{}
	for _, n := range inv.Nodes {
		for _, g := range n.GPUs {
			for _, p := range g.Placed {
				if p.Model == model {
					out[n.Hostname+"/"+g.UUID] += p.MemoryBytes
				}
			}
		}
	}
	return out
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// waitFakeGPUs waits until the inventory shows two GPUs on each of the
// given lab nodes: their agents run the agent image and read the lab's file.
func (s *stack) waitFakeGPUs(t *testing.T, nodes ...int) {
	t.Helper()
	start := time.Now()
	var inv inventory
	ok := waitFor(context.Background(), 2*time.Minute, time.Second, func() bool {
		inv = s.inventory()
		for _, i := range nodes {
			name, gpus := s.lab.Node(i).Name, 0
			for _, n := range inv.Nodes {
				if n.Hostname == name {
					gpus = len(n.GPUs)
				}
			}
			if gpus != 2 {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("the inventory does not show 2 fake GPUs on each of nodes %v: %+v", nodes, inv.Nodes)
	}
	t.Logf("agents (image %s) report 2 fake GPUs on each of nodes %v, %s after the stack was up", agentImage, nodes, time.Since(start).Round(100*time.Millisecond))
}

// gpuApart is why d's replicas do not each run on a GPU of their own on
// their node, with at least minNodes nodes among them ("" when they do):
// want running replicas, one GPU each, that GPU the node's (the lab's
// fake UUIDs name their node), no GPU twice.
func gpuApart(d deployment, want, minNodes int) string {
	if len(d.Observed.Tasks) != want {
		return fmt.Sprintf("%d replicas observed, want %d: %v", len(d.Observed.Tasks), want, gpuTasks(d))
	}
	gpus, nodes := map[string]bool{}, map[string]bool{}
	for _, tk := range d.Observed.Tasks {
		switch {
		case tk.State != "running":
			return fmt.Sprintf("slot %d is %s: %v", tk.Slot, tk.State, gpuTasks(d))
		case len(tk.GPUs) != 1:
			return fmt.Sprintf("slot %d has GPUs %v, want one: %v", tk.Slot, tk.GPUs, gpuTasks(d))
		case !strings.HasPrefix(tk.GPUs[0], "GPU-fake-"+tk.Node+"-"):
			return fmt.Sprintf("slot %d runs on %s with another node's GPU %s", tk.Slot, tk.Node, tk.GPUs[0])
		case gpus[tk.GPUs[0]]:
			return fmt.Sprintf("GPU %s given twice: %v", tk.GPUs[0], gpuTasks(d))
		}
		gpus[tk.GPUs[0]], nodes[tk.Node] = true, true
	}
	if len(nodes) < minNodes {
		return fmt.Sprintf("replicas on %d node(s), want at least %d: %v", len(nodes), minNodes, gpuTasks(d))
	}
	return ""
}

// gpuTasks lists d's replicas as slot@node:GPU:state.
func gpuTasks(d deployment) []string {
	var out []string
	for _, tk := range d.Observed.Tasks {
		out = append(out, fmt.Sprintf("g%d@%s:%s:%s", tk.Slot, tk.Node, strings.Join(tk.GPUs, "+"), tk.State))
	}
	slices.Sort(out)
	return out
}

// busiest is the worker holding most of d's replicas.
func (s *stack) busiest(d deployment) int {
	count := map[string]int{}
	for _, tk := range d.Observed.Tasks {
		count[tk.Node]++
	}
	best := gpuNodes[0]
	for _, i := range gpuNodes {
		if count[s.lab.Node(i).Name] > count[s.lab.Node(best).Name] {
			best = i
		}
	}
	return best
}

// offNode is true once every replica runs, none on node, and the inventory
// holds none of model's GPU memory there.
func (s *stack) offNode(model, node string) func(deployment) bool {
	return func(d deployment) bool {
		if !runningOff(node)(d) {
			return false
		}
		for k := range s.inventory().placed(model) {
			if strings.HasPrefix(k, node+"/") {
				return false
			}
		}
		return true
	}
}

// respreadGPU puts sentiment's three replicas back on both workers: slots
// keep their GPUs while their node is there, so a node back from a drain
// or a power cut holds none. Scaling to one and back to three places the
// two new slots away from the first one's node first.
func (s *stack) respreadGPU(t *testing.T) deployment {
	t.Helper()
	d := s.waitDeployment("sentiment", 3*time.Minute, running)
	for try := 0; try < 2 && gpuApart(d, 3, 2) != ""; try++ {
		s.mustCLI("scale", "sentiment", "1", "--wait", "--timeout", "3m")
		s.mustCLI("scale", "sentiment", "3", "--wait", "--timeout", "3m")
		d = s.waitDeployment("sentiment", 3*time.Minute, running)
	}
	if why := gpuApart(d, 3, 2); why != "" {
		t.Fatalf("sentiment not back on GPUs of both workers: %s", why)
	}
	return d
}

// scenarioGPUSpread: a 3-replica 1-GPU deployment lands on 3 different GPUs
// on both workers, as the deployment record (what `nlpswarm status` shows),
// the inventory and the replica services' pins say; it answers through the
// gateway, which finds the three replica services by their shared alias.
func scenarioGPUSpread(t *testing.T, s *stack, rep *report) {
	start := time.Now()
	s.mustCLI(append(gpuDeploy, "--wait", "--timeout", "5m")...)
	d := s.waitDeployment("sentiment", 2*time.Minute, running)
	took := time.Since(start)
	if why := gpuApart(d, 3, 2); why != "" {
		t.Fatal(why)
	}
	placed := s.inventory().placed("sentiment")
	for _, tk := range d.Observed.Tasks {
		if placed[tk.Node+"/"+tk.GPUs[0]] != 4<<30 {
			t.Errorf("the inventory does not show 4 GiB of sentiment on %s/%s: %v", tk.Node, tk.GPUs[0], placed)
		}
		spec := s.docker("service", "inspect", fmt.Sprintf("nlp-sentiment-g%d", tk.Slot), "--format",
			`{{json .Spec.TaskTemplate.Placement.Constraints}} {{json .Spec.TaskTemplate.ContainerSpec.Env}}`)
		if node := s.nodeByName(tk.Node); !strings.Contains(spec, "node.id=="+node.ID) || !strings.Contains(spec, "NVIDIA_VISIBLE_DEVICES="+tk.GPUs[0]) {
			t.Errorf("nlp-sentiment-g%d not pinned to %s and %s: %s", tk.Slot, tk.Node, tk.GPUs[0], spec)
		}
	}
	if len(placed) != 3 {
		t.Errorf("the inventory shows sentiment on %d GPUs, want 3: %v", len(placed), placed)
	}
	status := s.mustCLI("status", "sentiment")
	t.Logf("3 GPU replicas running after %s: %v\n$ nlpswarm status sentiment\n%s", took.Round(100*time.Millisecond), gpuTasks(d), status)
	l := s.startLoad(2)
	time.Sleep(5 * time.Second)
	l.end()
	l.log(t, "through the gateway")
	if l.failed.Load() != 0 || l.ok.Load() == 0 {
		t.Errorf("the gateway does not serve the three GPU replicas: %s", lostOf(l))
	}
	rep.add(row{"GPU spread", l.describe(), "-", lostOf(l),
		fmt.Sprintf("`%s`: running after %.0fs on %s", strings.Join(gpuDeploy, " "), took.Seconds(), strings.Join(gpuTasks(d), " "))})
}

// nodeByName is the lab node with that hostname.
func (s *stack) nodeByName(name string) *swarmlab.Node {
	for _, n := range s.lab.Nodes {
		if n.Name == name {
			return n
		}
	}
	s.t.Fatalf("no lab node %s", name)
	return nil
}

// gpuMove is what moveGPUReplicas saw.
type gpuMove struct {
	w             *swarmlab.Node // the worker the fault hit
	before, after deployment
	l             *load
	moved         time.Duration // from the fault to every replica running elsewhere
}

// moveGPUReplicas spreads sentiment's three GPU replicas over both workers,
// holds a load of 4 clients and injects fault into the worker holding most
// of them, until every replica runs elsewhere and the inventory holds none
// of its GPU memory there.
func (s *stack) moveGPUReplicas(t *testing.T, what string, fault func(w *swarmlab.Node)) gpuMove {
	m := gpuMove{before: s.respreadGPU(t)}
	m.w = s.lab.Node(s.busiest(m.before))
	m.l = s.startLoad(4)
	time.Sleep(5 * time.Second)
	start := time.Now()
	fault(m.w)
	m.after = s.waitDeployment("sentiment", 3*time.Minute, s.offNode("sentiment", m.w.Name))
	m.moved = time.Since(start)
	time.Sleep(5 * time.Second)
	m.l.end()
	m.l.log(t, what)
	t.Logf("replicas before: %v, after: %v (all running off %s after %s)", gpuTasks(m.before), gpuTasks(m.after), m.w.Name, m.moved.Round(100*time.Millisecond))
	return m
}

// scenarioGPUDrain: the worker holding most replicas is drained under load;
// the scheduler re-places its slots on the other worker's GPUs (each slot's
// own service, start-first); no request may fail.
func scenarioGPUDrain(t *testing.T, s *stack, rep *report) {
	m := s.moveGPUReplicas(t, "drain of a GPU worker", func(w *swarmlab.Node) {
		s.docker("node", "update", "--availability", "drain", w.ID)
	})
	s.docker("node", "update", "--availability", "active", m.w.ID)
	if why := gpuApart(m.after, 3, 1); why != "" && !strings.Contains(why, "given twice") {
		t.Errorf("after the drain: %s", why)
	}
	if m.l.failed.Load() != 0 {
		t.Errorf("%d requests failed during the drain", m.l.failed.Load())
	}
	rep.add(row{"GPU worker drained", m.l.describe() + ", sentiment ×3 on GPUs", "`docker node update --availability drain` " + m.w.Name,
		lostOf(m.l), fmt.Sprintf("%v → %v after %.0fs", gpuTasks(m.before), gpuTasks(m.after), m.moved.Seconds())})
}

// scenarioGPUPowerCut: the worker holding most replicas loses power under
// load; once Swarm marks it down the scheduler re-places its slots on the
// other worker's free GPU memory. Within 30 s of the cut every replica runs
// again off the lost node, and at most 0.1 % of the requests fail.
func scenarioGPUPowerCut(t *testing.T, s *stack, rep *report) {
	var downAfter time.Duration
	m := s.moveGPUReplicas(t, "power cut on a GPU worker", func(w *swarmlab.Node) { downAfter = s.powerCut(w) })
	t.Logf("node down after %s", downAfter.Round(100*time.Millisecond))
	if m.l.failedPct() > 0.1 {
		t.Errorf("%.3f%% of requests failed (> 0.1 %%)", m.l.failedPct())
	}
	if m.moved > 30*time.Second {
		t.Errorf("replicas running elsewhere %s after the power cut (> 30 s)", m.moved.Round(100*time.Millisecond))
	}
	rep.add(row{"GPU worker loses power", m.l.describe() + ", sentiment ×3 on GPUs",
		m.w.Name + ": SIGKILL of dockerd, containerd, shims and replicas, link down", lostOf(m.l),
		fmt.Sprintf("node down after %.0fs; %v → %v, all running after %.0fs", downAfter.Seconds(), gpuTasks(m.before), gpuTasks(m.after), m.moved.Seconds())})
	boot := time.Now()
	must(t, m.w.Boot(context.Background()))
	must(t, s.lab.WaitNodes(context.Background(), 3, 2*time.Minute))
	t.Logf("%s back after %s", m.w.Name, time.Since(boot).Round(100*time.Millisecond))
}

// scenarioGPURoll: sentiment deployed as replicas × 1 GPU of gpuMemory on
// the four fake 16 GiB GPUs is rolled to a new version under load through
// the gateway (a new push, deployed with the same request). How each
// replica rolls depends on the room for a second copy (scheduler/doc.go,
// "Rolling a GPU replica"): 3 × 4G start-first where they run; 2 × 16G
// start-first onto the free GPUs (moved); 4 × 16G stop-first one at a
// time. No request may fail; every replica ends on the new version, one
// GPU each; the inventory then holds exactly replicas × gpuMemory, one
// assignment per replica on its task's GPU, no GPU over its 16 GiB, and
// only the new replicas' containers are left on the workers.
func scenarioGPURoll(replicas int, gpuMemory string) func(*testing.T, *stack, *report) {
	return func(t *testing.T, s *stack, rep *report) {
		s.waitFakeGPUs(t, gpuNodes...)
		mem := map[string]int64{"4G": 4 << 30, "16G": 16 << 30}[gpuMemory]
		args := []string{"deploy", "sentiment", "--replicas", strconv.Itoa(replicas), "--memory", "256M", "--gpus", "1", "--gpu-memory", gpuMemory}
		s.mustCLI(append(args, "--wait", "--timeout", "5m")...)
		var before deployment
		if replicas == 3 && gpuMemory == "4G" {
			before = s.respreadGPU(t) // after the power cut all three ran on one worker's two GPUs
		} else {
			before = s.waitDeployment("sentiment", 3*time.Minute, func(d deployment) bool { return running(d) && gpuApart(d, replicas, 1) == "" })
		}
		l := s.startLoad(4)
		time.Sleep(3 * time.Second)
		v := s.pushCopy(t)
		start := time.Now()
		s.mustCLI(append(args, "--version", strconv.Itoa(v))...)
		var why string
		after := s.waitDeployment("sentiment", 6*time.Minute, func(d deployment) bool {
			why = s.rolledGPU(d, v, replicas, mem)
			return why == ""
		})
		took := time.Since(start)
		time.Sleep(3 * time.Second)
		l.end()
		what := fmt.Sprintf("rolling update of %d × %s GPU replicas", replicas, gpuMemory)
		l.log(t, what)
		if why != "" {
			t.Fatalf("%s: %s", what, why)
		}
		orders := map[string]int{}
		moved := 0
		for _, tk := range after.Observed.Tasks {
			order := strings.TrimSpace(s.docker("service", "inspect", fmt.Sprintf("nlp-sentiment-g%d", tk.Slot), "--format", "{{.Spec.UpdateConfig.Order}}"))
			orders[order]++
			for _, b := range before.Observed.Tasks {
				if b.Slot == tk.Slot && !slices.Equal(b.GPUs, tk.GPUs) {
					moved++
				}
			}
		}
		containers := 0
		ok := waitFor(context.Background(), time.Minute, time.Second, func() bool {
			containers = 0
			for _, i := range gpuNodes {
				out, err := s.dockerOn(i, "ps", "-q", "--filter", "name=nlp-sentiment-g")
				if err != nil {
					return false
				}
				containers += len(strings.Fields(out))
			}
			return containers == replicas
		})
		if !ok {
			t.Errorf("%d sentiment replica containers on the workers a minute after the roll, want %d", containers, replicas)
		}
		t.Logf("%s to version %d: %v → %v after %s; %d moved; update order %v; inventory %v", what, v, gpuTasks(before), gpuTasks(after),
			took.Round(100*time.Millisecond), moved, orders, s.inventory().placed("sentiment"))
		if l.failed.Load() != 0 {
			t.Errorf("%s: %s requests failed", what, lostOf(l))
		}
		rep.add(row{fmt.Sprintf("GPU rolling update, %d × %s", replicas, gpuMemory), l.describe(), "`" + strings.Join(args, " ") + " --version N` after a new push",
			lostOf(l), fmt.Sprintf("version %d on every replica, inventory %d × %s, after %.0fs; %d of %d moved; update order %v; %v → %v",
				v, replicas, gpuMemory, took.Seconds(), moved, replicas, orders, gpuTasks(before), gpuTasks(after))})
	}
}

// rolledGPU is why sentiment is not yet rolled to version v ("" once it
// is): every replica observed running on one GPU of its node, each replica
// service on version v with its update completed, the inventory holding
// exactly mem per replica on its task's GPU, and no GPU more than its
// 16 GiB.
func (s *stack) rolledGPU(d deployment, v, replicas int, mem int64) string {
	if d.Version != v || !running(d) {
		return fmt.Sprintf("version %d %s %d/%d running", d.Version, d.Status, d.Observed.Running, d.Replicas)
	}
	want := map[string]int64{} // node/GPU → the memory its replicas hold
	for _, tk := range d.Observed.Tasks {
		if tk.State != "running" || len(tk.GPUs) != 1 || !strings.HasPrefix(tk.GPUs[0], "GPU-fake-"+tk.Node+"-") {
			return fmt.Sprintf("g%d is %s on %s with GPUs %v", tk.Slot, tk.State, tk.Node, tk.GPUs)
		}
		want[tk.Node+"/"+tk.GPUs[0]] += mem
	}
	if len(d.Observed.Tasks) != replicas {
		return fmt.Sprintf("%d replicas observed: %v", len(d.Observed.Tasks), gpuTasks(d))
	}
	for _, tk := range d.Observed.Tasks {
		ver, state := s.serviceVersion(fmt.Sprintf("sentiment-g%d", tk.Slot))
		if ver != strconv.Itoa(v) || (state != "completed" && state != "") {
			return fmt.Sprintf("nlp-sentiment-g%d: version %s, update %s", tk.Slot, ver, state)
		}
	}
	inv := s.inventory()
	placed := inv.placed("sentiment")
	if !maps.Equal(placed, want) {
		return fmt.Sprintf("inventory %v, want %v (the running replicas' GPUs)", placed, want)
	}
	for _, n := range inv.Nodes {
		for _, g := range n.GPUs {
			var sum int64
			for _, p := range g.Placed {
				sum += p.MemoryBytes
			}
			if sum > 16<<30 {
				return fmt.Sprintf("GPU %s/%s holds %d bytes, more than its 16 GiB", n.Hostname, g.UUID, sum)
			}
		}
	}
	return ""
}

// gpuReplicasLeft reports whether a container of model's GPU replica
// services is left on a worker (or a worker does not answer).
func (s *stack) gpuReplicasLeft(model string) bool {
	for _, i := range gpuNodes {
		out, err := s.dockerOn(i, "ps", "-q", "--filter", "name=nlp-"+model+"-g")
		if err != nil || strings.TrimSpace(out) != "" {
			return true
		}
	}
	return false
}

// scenarioGPUAutoscale: `deploy --gpus 1 --gpu-memory 8G --min 0 --max 4`
// from zero: a request wakes it (one replica placed), a load scales it up
// (each new replica placed on a GPU of its own), the end of the load scales
// it down and then to zero, each step giving back exactly the removed
// replicas' GPU memory in the inventory; a request wakes it again.
func scenarioGPUAutoscale(t *testing.T, s *stack, rep *report) {
	const perReplica = 8 << 30
	args := []string{"deploy", "sentiment", "--memory", "256M", "--gpus", "1", "--gpu-memory", "8G", "--min", "0", "--max", "4",
		"--target-inflight", "1", "--scale-down-delay", "10s", "--idle-to-zero", "30s", "--replicas", "0"}
	s.mustCLI(args...)
	var notes []string
	// held is true once the deployment runs n replicas, each on a GPU of
	// its own, and the inventory holds exactly their GPU memory; at zero,
	// once no replica container is left on the workers either (a removed
	// service's task still serves while it stops)
	held := func(n int) func(deployment) bool {
		return func(d deployment) bool {
			if d.Replicas != n || d.ObservedGeneration < d.Generation || d.Observed.Running != n || (n > 0 && gpuApart(d, n, 1) != "") {
				return false
			}
			if n == 0 && s.gpuReplicasLeft("sentiment") {
				return false
			}
			p := s.inventory().placed("sentiment")
			return len(p) == n && total(p) == int64(n)*perReplica
		}
	}
	step := func(what string, start time.Time, n int, timeout time.Duration) deployment {
		t.Helper()
		d := s.waitDeployment("sentiment", timeout, held(n))
		took := time.Since(start)
		t.Logf("%s: %d replica(s) after %s, %v; inventory %v", what, n, took.Round(100*time.Millisecond), gpuTasks(d), s.inventory().placed("sentiment"))
		notes = append(notes, fmt.Sprintf("%s: %d after %.0fs", what, n, took.Seconds()))
		return d
	}
	step("to zero (deploy --replicas 0)", time.Now(), 0, 3*time.Minute)
	wake := func(what string) {
		start := time.Now()
		code, msg := s.infer(&http.Client{Timeout: 60 * time.Second}, sentimentTarget)
		if code != 200 {
			t.Fatalf("%s: the request that wakes sentiment got %d %s after %s", what, code, msg, time.Since(start).Round(100*time.Millisecond))
		}
		t.Logf("%s: first request answered after %s", what, time.Since(start).Round(100*time.Millisecond))
		notes = append(notes, fmt.Sprintf("%s: first request answered after %.1fs", what, time.Since(start).Seconds()))
		step(what, start, 1, 2*time.Minute)
	}
	wake("wake from zero")
	start := time.Now()
	l := s.startLoad(8)
	up := step("scale up (8 clients, target 1 in flight)", start, 4, 3*time.Minute)
	l.end()
	l.log(t, "load while scaling up")
	if why := gpuApart(up, 4, 2); why != "" {
		t.Errorf("scaled up: %s", why)
	}
	start = time.Now()
	s.infer(&http.Client{Timeout: 30 * time.Second}, sentimentTarget) // within idle_to_zero: the floor is 1
	step("scale down (load ended)", start, 1, 2*time.Minute)
	step("scale to zero (idle 30s)", start, 0, 3*time.Minute)
	wake("wake again")
	rep.add(row{"GPU autoscaling", l.describe() + " during the scale up", "`" + strings.Join(args, " ") + "`", lostOf(l) + " during the scale up",
		strings.Join(notes, "; ") + "; each step's GPU memory exactly the replicas' in the inventory"})
}

// TestGPUApart checks the GPU scenarios' judge of a placement (pure, runs
// in make test).
func TestGPUApart(t *testing.T) {
	mk := func(ts ...replica) deployment {
		var d deployment
		d.Observed.Tasks = ts
		return d
	}
	on := func(slot int, node, gpu, state string) replica {
		r := replica{Slot: slot, Node: node, State: state}
		if gpu != "" {
			r.GPUs = []string{gpu}
		}
		return r
	}
	for _, c := range []struct {
		name           string
		d              deployment
		want, minNodes int
		why            string // a part of the reason, "" for none
	}{
		{"three GPUs on two nodes", mk(on(0, "n2", "GPU-fake-n2-0", "running"), on(1, "n3", "GPU-fake-n3-0", "running"), on(2, "n2", "GPU-fake-n2-1", "running")), 3, 2, ""},
		{"one node", mk(on(0, "n2", "GPU-fake-n2-0", "running"), on(1, "n2", "GPU-fake-n2-1", "running")), 2, 2, "on 1 node(s)"},
		{"a GPU twice", mk(on(0, "n2", "GPU-fake-n2-0", "running"), on(1, "n3", "GPU-fake-n3-0", "running"), on(2, "n3", "GPU-fake-n3-0", "running")), 3, 2, "given twice"},
		{"another node's GPU", mk(on(0, "n2", "GPU-fake-n3-0", "running")), 1, 1, "another node's GPU"},
		{"no GPU", mk(on(0, "n2", "", "running")), 1, 1, "want one"},
		{"not running", mk(on(0, "n2", "GPU-fake-n2-0", "starting")), 1, 1, "is starting"},
		{"too few", mk(on(0, "n2", "GPU-fake-n2-0", "running")), 3, 1, "1 replicas observed, want 3"},
		{"at zero", mk(), 0, 0, ""},
	} {
		got := gpuApart(c.d, c.want, c.minNodes)
		if (c.why == "") != (got == "") || !strings.Contains(got, c.why) {
			t.Errorf("%s: %q, want %q", c.name, got, c.why)
		}
	}
}
