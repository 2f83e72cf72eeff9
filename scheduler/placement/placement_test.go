package placement

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

const gib = int64(1) << 30

func node(id string, free ...float64) Node {
	n := Node{ID: id, Hostname: id, Available: true, Labels: map[string]string{"type": "machine-learning"}}
	for i, f := range free {
		n.GPUs = append(n.GPUs, GPU{UUID: fmt.Sprintf("%s-gpu%d", id, i), Total: 80 * gib, Free: int64(f * float64(gib))})
	}
	return n
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name     string
		snap     Snapshot
		req      Request
		policy   Policy
		wantNode string
		wantGPUs []string
		wantErr  string
	}{
		{"best fit takes the tightest GPU", Snapshot{Nodes: []Node{node("a", 80, 20), node("b", 17)}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: 16 * gib}, BestFit{}, "b", []string{"b-gpu0"}, ""},
		{"spread takes the emptiest GPU", Snapshot{Nodes: []Node{node("a", 80, 20), node("b", 17)}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: 16 * gib}, Spread{}, "a", []string{"a-gpu0"}, ""},
		{"platform assignments count", Snapshot{Nodes: []Node{node("a", 80)}, Assigned: []Assignment{{Owner: "x", Node: "a", GPU: "a-gpu0", Memory: 70 * gib}}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: 16 * gib}, BestFit{}, "", nil, "no node with 1 GPU(s) of 16 GiB free GPU memory; largest free: 10 GiB on a"},
		{"replicas share the pinned GPU", Snapshot{Nodes: []Node{node("a", 30), node("b", 50)}},
			Request{Owner: "m", Replicas: 3, GPUs: 1, GPUMemory: 16 * gib}, BestFit{}, "b", []string{"b-gpu0"}, ""},
		{"two GPUs on one node", Snapshot{Nodes: []Node{node("a", 80, 10), node("b", 40, 40, 79)}},
			Request{Owner: "m", Replicas: 1, GPUs: 2, GPUMemory: 30 * gib}, BestFit{}, "b", []string{"b-gpu0", "b-gpu1"}, ""},
		{"labels filter", Snapshot{Nodes: []Node{node("a", 80)}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: gib, Labels: map[string]string{"zone": "eu"}}, BestFit{}, "", nil, "1 node(s) without labels map[zone:eu]"},
		{"drained node", Snapshot{Nodes: []Node{{ID: "a", Hostname: "a", GPUs: []GPU{{UUID: "g", Total: 80 * gib, Free: 80 * gib}}}}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: gib}, BestFit{}, "", nil, "1 node(s) not available"},
		{"no GPUs at all", Snapshot{Nodes: []Node{node("cpu")}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: gib}, BestFit{}, "", nil, "no free GPU memory in the inventory"},
		{"nvml sees memory used by others", Snapshot{Nodes: []Node{node("a", 9.5)}},
			Request{Owner: "m", Replicas: 1, GPUs: 1, GPUMemory: 16 * gib}, BestFit{}, "", nil, "largest free: 9.5 GiB on a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewState(tt.snap).Place(tt.policy, tt.req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Node != tt.wantNode || fmt.Sprint(p.GPUs) != fmt.Sprint(tt.wantGPUs) {
				t.Fatalf("placed on %s %v, want %s %v", p.Node, p.GPUs, tt.wantNode, tt.wantGPUs)
			}
		})
	}
}

// Placing never oversubscribes a GPU through the platform's own assignments.
func TestNeverOversubscribes(t *testing.T) {
	st := NewState(Snapshot{Nodes: []Node{node("a", 80, 80), node("b", 80)}})
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 500; i++ {
		st.Place(BestFit{}, Request{Owner: fmt.Sprint(i), Replicas: 1, GPUs: 1, GPUMemory: int64(rng.Intn(30)+1) * gib})
	}
	for i := range st.free {
		for j, f := range st.free[i] {
			if f < 0 {
				t.Fatalf("gpu %d/%d oversubscribed: %d", i, j, f)
			}
		}
	}
}

// simulate fills a 100-node × 8-GPU (80 GiB) cluster with a stream of models
// of 0.5–40 GiB (fixed seed, random order; the 1,000 models arrive again in a
// new order until one is refused) and returns the share of GPU memory in use
// at the first refusal and the planning time.
func simulate(p Policy) (used float64, placed int, took, first1000 time.Duration) {
	rng := rand.New(rand.NewSource(42))
	var nodes []Node
	for i := 0; i < 100; i++ {
		n := Node{ID: fmt.Sprintf("n%03d", i), Hostname: fmt.Sprintf("gpu-node-%d", i), Available: true}
		for j := 0; j < 8; j++ {
			n.GPUs = append(n.GPUs, GPU{UUID: fmt.Sprintf("n%03d-g%d", i, j), Total: 80 * gib, Free: 80 * gib})
		}
		nodes = append(nodes, n)
	}
	sizes := make([]int64, 1000)
	for i := range sizes {
		sizes[i] = int64((0.5 + rng.Float64()*39.5) * float64(gib))
	}
	st := NewState(Snapshot{Nodes: nodes})
	start := time.Now()
	for round := 0; ; round++ {
		order := rng.Perm(len(sizes))
		for _, k := range order {
			if _, err := st.Place(p, Request{Owner: fmt.Sprint(round, "-", k), Replicas: 1, GPUs: 1, GPUMemory: sizes[k]}); err != nil {
				return st.Used(), placed, time.Since(start), first1000
			}
			placed++
			if placed == 1000 {
				first1000 = time.Since(start)
			}
		}
	}
}

func TestSimulationBestFitBeatsSpread(t *testing.T) {
	bf, nbf, tbf, f1 := simulate(BestFit{})
	sp, nsp, tsp, f2 := simulate(Spread{})
	t.Logf("GPU memory in use at the first refusal: best-fit %.1f%% (%d models, planned in %s; first 1,000 in %s), spread %.1f%% (%d models, %s; first 1,000 in %s)",
		100*bf, nbf, tbf.Round(time.Microsecond), f1.Round(time.Microsecond), 100*sp, nsp, tsp.Round(time.Microsecond), f2.Round(time.Microsecond))
	if bf < 0.95 || bf <= sp+0.05 {
		t.Fatalf("best-fit %.3f should be ≥ 0.95 and clearly above spread %.3f", bf, sp)
	}
}

func BenchmarkSimulation(b *testing.B) {
	for _, p := range []struct {
		name string
		p    Policy
	}{{"best-fit", BestFit{}}, {"spread", Spread{}}} {
		b.Run(p.name, func(b *testing.B) {
			var used float64
			var n int
			for i := 0; i < b.N; i++ {
				used, n, _, _ = simulate(p.p)
			}
			b.ReportMetric(100*used, "%used")
			b.ReportMetric(float64(n), "models")
		})
	}
}

// Replicas placed one by one with PlaceSpread take a node each while nodes
// with room remain, then share (issue 16: two replicas of a 1-GPU model on
// two 1-GPU nodes run on both).
func TestPlaceSpread(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		n     int
		want  []string // node/GPU of each replica, in order
		err   string   // of the first replica that does not fit
	}{
		{"two 1-GPU nodes take one replica each", []Node{node("a", 80), node("b", 80)}, 2, []string{"a/a-gpu0", "b/b-gpu0"}, ""},
		{"best fit first, then the other node even if tighter elsewhere", []Node{node("a", 80, 20), node("b", 40)}, 2,
			[]string{"a/a-gpu1", "b/b-gpu0"}, ""},
		{"three replicas on two nodes of two GPUs: the third shares a node, on its other GPU", []Node{node("a", 80, 80), node("b", 80, 80)}, 3,
			[]string{"a/a-gpu0", "b/b-gpu0", "a/a-gpu1"}, ""},
		{"one node of two GPUs: a GPU each before sharing one", []Node{node("a", 80, 80)}, 3,
			[]string{"a/a-gpu0", "a/a-gpu1", "a/a-gpu0"}, ""},
		{"one node: replicas share it rather than not run", []Node{node("a", 40)}, 2, []string{"a/a-gpu0", "a/a-gpu0"}, ""},
		{"no room for the third", []Node{node("a", 16), node("b", 16)}, 3, []string{"a/a-gpu0", "b/b-gpu0"},
			"no node with 1 GPU(s) of 16 GiB free GPU memory; no free GPU memory in the inventory"},
		{"an unavailable node is not used", []Node{node("a", 80), {ID: "b", Hostname: "b", GPUs: node("b", 80).GPUs}, node("c", 80)}, 2,
			[]string{"a/a-gpu0", "c/c-gpu0"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewState(Snapshot{Nodes: tt.nodes})
			var got []string
			var others []Assignment
			var err error
			for slot := 0; slot < tt.n; slot++ {
				var p Plan
				p, err = st.PlaceSpread(BestFit{}, Request{Owner: "m", Slot: slot, Replicas: 1, GPUs: 1, GPUMemory: 16 * gib}, others)
				if err != nil {
					break
				}
				if p.Assignments[0].Slot != slot {
					t.Fatalf("slot %d assigned as %d", slot, p.Assignments[0].Slot)
				}
				got = append(got, p.Node+"/"+strings.Join(p.GPUs, ","))
				others = append(others, p.Assignments...)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("placed %v, want %v", got, tt.want)
			}
			if (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}
}
