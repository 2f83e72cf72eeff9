package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// TestDiffRollsGPUReplicas: how a rolling update (a new version) of each GPU
// replica runs, by the room its GPU has for the second copy a start-first
// update starts beside the old one: in place, moved to a GPU with room, or
// stop-first one replica at a time; and the inventory it leaves.
func TestDiffRollsGPUReplicas(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:img1", Network: "net", ArtifactBaseURL: "http://apiserver:8081"}
	const gib = int64(1) << 30
	v1 := func(replicas int, mem int64) deployment.Desired {
		return deployment.Desired{Model: "m", Task: "text-classification", Version: 1, Digest: "sha256:v1", Replicas: replicas,
			Resources: deployment.Resources{GPUs: 1, GPUMemory: mem}, Generation: 3}
	}
	v2 := func(d deployment.Desired) deployment.Desired {
		d.Version, d.Digest, d.Generation = 2, "sha256:v2", d.Generation+1
		return d
	}
	// nodes n1..nk with one 16 GiB GPU each (g1..gk); held: slot i on node
	// held[i], of mem each; services of those slots on version d (updating:
	// the ones Swarm is rolling)
	cluster := func(k int, mem int64, held ...string) placement.Snapshot {
		var s placement.Snapshot
		for i := 1; i <= k; i++ {
			id := "n" + string(rune('0'+i))
			s.Nodes = append(s.Nodes, placement.Node{ID: id, Hostname: id, Available: true,
				GPUs: []placement.GPU{{UUID: "g" + string(rune('0'+i)), Total: 16 * gib, Free: 16 * gib}}})
		}
		for slot, n := range held {
			s.Assigned = append(s.Assigned, placement.Assignment{Owner: "m", Slot: slot, Node: n, GPU: "g" + n[1:], Memory: mem})
		}
		return s
	}
	services := func(d deployment.Desired, updating map[int]bool, held ...string) []Service {
		var out []Service
		for slot, n := range held {
			spec := BuildSpec(Desired{Desired: d, Pin: &Pin{Slot: slot, NodeID: n, GPUUUIDs: []string{"g" + n[1:]}}}, cfg)
			out = append(out, Service{ID: "id-" + spec.Annotations.Name, Name: spec.Annotations.Name, Model: "m",
				SpecHash: spec.Annotations.Labels[LabelSpecHash], Replicas: 1, Updating: updating[slot]})
		}
		return out
	}
	type roll struct {
		service, how string // how: in place, stop-first, moved to NODE, deferred
	}
	for _, c := range []struct {
		name     string
		desired  deployment.Desired
		services []Service
		inv      placement.Snapshot
		want     []roll
		// the inventory after the pass: slot → node, where it changed
		assigned map[int]string
	}{
		{name: "room on each GPU: every replica rolls start-first where it runs",
			desired: v2(v1(3, 4*gib)), services: services(v1(3, 4*gib), nil, "n1", "n2", "n1"), inv: cluster(2, 4*gib, "n1", "n2", "n1"),
			want: []roll{{"nlp-m-g0", "in place"}, {"nlp-m-g1", "in place"}, {"nlp-m-g2", "in place"}}},
		{name: "two replicas on one GPU with room for one second copy: the other moves",
			desired: v2(v1(2, 5*gib)), services: services(v1(2, 5*gib), nil, "n1", "n1"), inv: cluster(2, 5*gib, "n1", "n1"),
			want:     []roll{{"nlp-m-g0", "in place"}, {"nlp-m-g1", "moved to n2"}},
			assigned: map[int]string{0: "n1", 1: "n2"}},
		{name: "a full GPU: the replica moves to a free GPU, start-first",
			desired: v2(v1(2, 16*gib)), services: services(v1(2, 16*gib), nil, "n1", "n2"), inv: cluster(4, 16*gib, "n1", "n2"),
			want:     []roll{{"nlp-m-g0", "moved to n3"}, {"nlp-m-g1", "moved to n4"}},
			assigned: map[int]string{0: "n3", 1: "n4"}},
		{name: "no GPU with room: stop-first, one replica at a time",
			desired: v2(v1(2, 16*gib)), services: services(v1(2, 16*gib), nil, "n1", "n2"), inv: cluster(2, 16*gib, "n1", "n2"),
			want: []roll{{"nlp-m-g0", "stop-first"}, {"nlp-m-g1", "deferred"}}},
		{name: "no GPU with room, the other replica still rolling: wait",
			desired:  v2(v1(2, 16*gib)),
			services: append(services(v1(2, 16*gib), nil, "n1"), services(v2(v1(2, 16*gib)), map[int]bool{1: true}, "n1", "n2")[1]),
			inv:      cluster(2, 16*gib, "n1", "n2"),
			want:     []roll{{"nlp-m-g0", "deferred"}}},
		{name: "no GPU with room, the other replica rolled: the next one rolls",
			desired:  v2(v1(2, 16*gib)),
			services: append(services(v1(2, 16*gib), nil, "n1"), services(v2(v1(2, 16*gib)), nil, "n1", "n2")[1]),
			inv:      cluster(2, 16*gib, "n1", "n2"),
			want:     []roll{{"nlp-m-g0", "stop-first"}}},
		{name: "a changed request (4 → 16 GiB) with a new version: not on the GPU its old task still uses",
			desired: v2(v1(1, 16*gib)), services: services(v1(1, 4*gib), nil, "n1"), inv: cluster(2, 4*gib, "n1"),
			want: []roll{{"nlp-m-g0", "moved to n2"}}, assigned: map[int]string{0: "n2"}},
		{name: "a changed request with a new version and no other GPU: stop-first",
			desired: v2(v1(1, 16*gib)), services: services(v1(1, 4*gib), nil, "n1"), inv: cluster(1, 4*gib, "n1"),
			want: []roll{{"nlp-m-g0", "stop-first"}}, assigned: map[int]string{0: "n1"}},
		{name: "a changed request alone, placed back on its GPU: the same spec, nothing rolls",
			desired: v1(1, 16*gib), services: services(v1(1, 4*gib), nil, "n1"), inv: cluster(1, 4*gib, "n1"),
			assigned: map[int]string{0: "n1"}},
		{name: "used by something else (NVML): no room though the inventory has",
			desired: v2(v1(1, 8*gib)), services: services(v1(1, 8*gib), nil, "n1"),
			inv: func() placement.Snapshot {
				s := cluster(1, 8*gib, "n1")
				s.Nodes[0].GPUs[0].Free = 2 * gib
				return s
			}(),
			want: []roll{{"nlp-m-g0", "stop-first"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := Diff([]deployment.Desired{c.desired}, c.services, c.inv, cfg)
			var got []roll
			nodes := map[int]string{}
			for _, ch := range p.Updates {
				how := "in place"
				switch {
				case ch.StopFirst:
					how = "stop-first"
				case strings.Contains(ch.Why, RollMoved) || strings.Contains(ch.Why, "re-placed"):
					how = "moved to " + ch.Spec.TaskTemplate.Placement.Constraints[len(ch.Spec.TaskTemplate.Placement.Constraints)-1][len("node.id=="):]
				}
				if ch.Version != 2 || !ch.SpecChanged {
					t.Errorf("%s: not a rolling update to version 2: %+v", ch.Service, ch)
				}
				got = append(got, roll{ch.Service, how})
			}
			for _, d := range p.Deferred {
				got = append(got, roll{d.Service, "deferred"})
				if !strings.Contains(d.Why, "stop-first") {
					t.Errorf("%s deferred for %q", d.Service, d.Why)
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("rolls %v, want %v (plan %+v)", got, c.want, p)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("rolls %v, want %v", got, c.want)
				}
			}
			// the inventory: a moved slot's assignment is on its new GPU
			// only; nothing else is rewritten, nothing held twice
			for _, a := range p.GPUAssigns {
				seen := map[int]bool{}
				for _, x := range a.Assignments {
					if seen[x.Slot] || x.Memory != c.desired.GPUMemory {
						t.Errorf("slot %d assigned twice or with %d bytes: %+v", x.Slot, x.Memory, a.Assignments)
					}
					seen[x.Slot] = true
					nodes[x.Slot] = x.Node
				}
				if len(seen) != c.desired.Replicas {
					t.Errorf("assignments %+v, want one per replica", a.Assignments)
				}
			}
			if len(c.assigned) == 0 && len(p.GPUAssigns) != 0 {
				t.Errorf("assignments rewritten: %+v", p.GPUAssigns)
			}
			for slot, n := range c.assigned {
				if nodes[slot] != n {
					t.Errorf("slot %d assigned on %q, want %s", slot, nodes[slot], n)
				}
			}
			// a second pass over the result changes nothing more than the
			// deferred rolls
			if p.Empty() && len(p.Deferred) == 0 && len(c.want) > 0 {
				t.Errorf("empty plan")
			}
		})
	}
}

// A service counts as being rolled from Swarm's update status, and in the
// moment between a pass's spec write and the updater's first status write
// (a stop-first roll of the next replica must not start then).
func TestUpdating(t *testing.T) {
	now := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	svc := func(updated time.Duration, previous bool, u *swarm.UpdateStatus) swarm.Service {
		s := swarm.Service{UpdateStatus: u}
		s.UpdatedAt = now.Add(updated)
		if previous {
			s.PreviousSpec = &swarm.ServiceSpec{}
		}
		return s
	}
	for _, c := range []struct {
		name string
		s    swarm.Service
		want bool
	}{
		{"created, never updated", svc(-time.Second, false, nil), false},
		{"updating", svc(-time.Minute, true, &swarm.UpdateStatus{State: swarm.UpdateStateUpdating}), true},
		{"rolling back", svc(-time.Minute, true, &swarm.UpdateStatus{State: swarm.UpdateStateRollbackStarted}), true},
		{"completed", svc(-10*time.Second, true, &swarm.UpdateStatus{State: swarm.UpdateStateCompleted, CompletedAt: at(-10*time.Second - time.Millisecond)}), false},
		{"spec just written, no status yet", svc(-time.Second, true, nil), true},
		{"spec just written over an earlier completion", svc(-time.Second, true, &swarm.UpdateStatus{State: swarm.UpdateStateCompleted, CompletedAt: at(-time.Minute)}), true},
		{"no status long after the write (a scale only)", svc(-time.Minute, true, nil), false},
		{"paused", svc(-time.Minute, true, &swarm.UpdateStatus{State: swarm.UpdateStatePaused}), false},
	} {
		if got := updating(c.s, now); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
