package scheduler

import (
	"reflect"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// Every reconcile decision, without Docker or Postgres: Diff's plan for a
// desired state, the services Swarm has and the inventory.
func TestDiff(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:img1", Network: "net", ArtifactBaseURL: "http://apiserver:8081"}
	ortCfg := cfg
	ortCfg.ORTImage = "sha256:ort1"
	noORT := func() string {
		_, err := cfg.Engine(deployment.BackendORT)
		if err == nil {
			t.Fatal("ort without an ORT image was accepted")
		}
		return err.Error()
	}()
	cpu := deployment.Desired{Model: "cpu", Task: "text-classification", Version: 1, Digest: "sha256:aa", Replicas: 2, Generation: 4}
	gpu := deployment.Desired{Model: "gpu", Task: "feature-extraction", Version: 1, Digest: "sha256:bb", Replicas: 1,
		Resources: deployment.Resources{GPUs: 1, GPUMemory: 8 << 30}, Generation: 7}
	with := func(d deployment.Desired, f func(*deployment.Desired)) deployment.Desired { f(&d); return d }
	// svc is the service Swarm would have after d was applied with cfg and pin
	svc := func(d deployment.Desired, pin *Pin, c SpecConfig) Service {
		spec := BuildSpec(Desired{Desired: d, Pin: pin}, c)
		return Service{ID: "id-" + spec.Annotations.Name, Name: spec.Annotations.Name, Model: d.Model, SpecHash: spec.Annotations.Labels[LabelSpecHash],
			Replicas: replicas(spec), Backend: spec.Annotations.Labels[LabelBackend]}
	}
	hash := func(d deployment.Desired, pin *Pin, c SpecConfig) string { return svc(d, pin, c).SpecHash }
	node := func(gpus ...placement.GPU) placement.Snapshot {
		return placement.Snapshot{Nodes: []placement.Node{{ID: "n1", Hostname: "ml-1", Available: true, GPUs: gpus}}}
	}
	free80 := placement.GPU{UUID: "GPU-a", Total: 80 << 30, Free: 80 << 30}
	pinA := &Pin{NodeID: "n1", GPUUUIDs: []string{"GPU-a"}}
	heldA := func(mem int64) placement.Snapshot {
		s := node(free80)
		s.Assigned = []placement.Assignment{{Owner: "gpu", Node: "n1", GPU: "GPU-a", Memory: mem}}
		return s
	}
	assignA := []GPUAssign{{Model: "gpu", Replicas: []Pin{{Slot: 0, NodeID: "n1", GPUUUIDs: []string{"GPU-a"}, New: true}},
		Assignments: []deployment.GPUAssignment{{Model: "gpu", Node: "n1", GPU: "GPU-a", Memory: 8 << 30}}}}
	// two nodes of one 80 GiB GPU each; held gives the snapshot gpu's slots
	// (slot i on the node and GPU given)
	two := func(downB bool, held ...string) placement.Snapshot {
		s := placement.Snapshot{Nodes: []placement.Node{
			{ID: "n1", Hostname: "ml-1", Available: true, GPUs: []placement.GPU{free80}},
			{ID: "n2", Hostname: "ml-2", Available: !downB, GPUs: []placement.GPU{{UUID: "GPU-b", Total: 80 << 30, Free: 80 << 30}}},
			{ID: "n3", Hostname: "ml-3", Available: true, GPUs: []placement.GPU{{UUID: "GPU-c", Total: 80 << 30, Free: 80 << 30}}}}}
		for i, h := range held {
			node, gpu, _ := strings.Cut(h, "/")
			s.Assigned = append(s.Assigned, placement.Assignment{Owner: "gpu", Slot: i, Node: node, GPU: gpu, Memory: 8 << 30})
		}
		return s
	}
	pinOn := func(slot int, node, gpu string) *Pin { return &Pin{Slot: slot, NodeID: node, GPUUUIDs: []string{gpu}} }
	assign := func(pins ...*Pin) []GPUAssign {
		a := GPUAssign{Model: "gpu"}
		for _, p := range pins {
			a.Replicas = append(a.Replicas, *p)
			a.Assignments = append(a.Assignments, deployment.GPUAssignment{Model: "gpu", Slot: p.Slot, Node: p.NodeID, GPU: p.GPUUUIDs[0], Memory: 8 << 30})
		}
		return []GPUAssign{a}
	}
	placed := func(p *Pin) *Pin { q := *p; q.New = true; return &q }
	gpu2 := with(gpu, func(d *deployment.Desired) { d.Replicas = 2 })
	gpu3 := with(gpu, func(d *deployment.Desired) { d.Replicas = 3 })
	noRoom := func() string {
		_, err := placement.NewState(node()).Place(placement.BestFit{}, placement.Request{Owner: "gpu", Replicas: 1, GPUs: 1, GPUMemory: 8 << 30})
		if err == nil {
			t.Fatal("placement on a node without GPUs succeeded")
		}
		return err.Error()
	}()

	// want is the plan's decisions by kind, each as "model: detail"
	type want struct {
		creates, updates, removes, unchanged, unplaceable, frees, short []string
		assigns                                                         []GPUAssign
	}
	tests := []struct {
		name     string
		desired  []deployment.Desired
		services []Service
		inv      placement.Snapshot
		cfg      SpecConfig
		want     want
	}{
		{name: "create a new deployment", desired: []deployment.Desired{cpu},
			want: want{creates: []string{"cpu: new: version 1, 2 replica(s) on go"}}},
		// issue 14: the engine per deployment
		{name: "the default engine is ort when an ORT image is configured", desired: []deployment.Desired{cpu}, cfg: ortCfg,
			want: want{creates: []string{"cpu: new: version 1, 2 replica(s) on ort"}}},
		{name: "go asked for stays go beside an ORT image", desired: []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Backend = "go" })}, cfg: ortCfg,
			want: want{creates: []string{"cpu: new: version 1, 2 replica(s) on go"}}},
		{name: "ort asked for without an ORT image is unplaceable; its service is left alone",
			desired:  []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Backend = "ort" })},
			services: []Service{svc(cpu, nil, cfg)},
			want:     want{unplaceable: []string{"cpu: " + noORT}}},
		{name: "an unknown engine (a row older than this scheduler) is unplaceable",
			desired: []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Backend = "tpu" })}, cfg: ortCfg,
			want: want{unplaceable: []string{`cpu: unknown backend "tpu" (go or ort)`}}},
		{name: "an ORT image turns default deployments to ort: a rolling update", desired: []deployment.Desired{cpu},
			services: []Service{svc(cpu, nil, cfg)}, cfg: ortCfg,
			want: want{updates: []string{"cpu: backend go → ort (spec " + hash(cpu, nil, cfg) + " → " + hash(cpu, nil, ortCfg) + "): rolling update"}}},
		{name: "a GPU deployment refused its engine keeps its GPU and is not placed",
			desired:  []deployment.Desired{with(gpu, func(d *deployment.Desired) { d.Backend = "ort" })},
			services: []Service{svc(gpu, pinA, cfg)}, inv: heldA(8 << 30),
			want: want{unplaceable: []string{"gpu: " + noORT}}},
		{name: "nothing when equal", desired: []deployment.Desired{cpu}, services: []Service{svc(cpu, nil, cfg)},
			want: want{unchanged: []string{"cpu"}}},
		{name: "replicas alone: a scale, not a rolling update", desired: []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Replicas = 5 })},
			services: []Service{svc(cpu, nil, cfg)}, want: want{updates: []string{"cpu: replicas 2 → 5"}}},
		{name: "a new version changes the spec hash", desired: []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Version, d.Digest = 2, "sha256:cc" })},
			services: []Service{svc(cpu, nil, cfg)},
			want: want{updates: []string{"cpu: spec changed (" + hash(cpu, nil, cfg) + " → " +
				hash(with(cpu, func(d *deployment.Desired) { d.Version, d.Digest = 2, "sha256:cc" }), nil, cfg) + "): rolling update"}}},
		{name: "a new runtime image changes the spec", desired: []deployment.Desired{cpu}, services: []Service{svc(cpu, nil, cfg)},
			cfg: SpecConfig{Image: "sha256:img2", Network: "net", ArtifactBaseURL: "http://apiserver:8081"},
			want: want{updates: []string{"cpu: spec changed (" + hash(cpu, nil, cfg) + " → " +
				hash(cpu, nil, SpecConfig{Image: "sha256:img2", Network: "net", ArtifactBaseURL: "http://apiserver:8081"}) + "): rolling update"}}},
		{name: "resources and placement labels change the spec, with the count",
			desired:  []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.CPUs, d.Labels, d.Replicas = 2, map[string]string{"zone": "eu"}, 3 })},
			services: []Service{svc(cpu, nil, cfg)},
			want: want{updates: []string{"cpu: spec changed (" + hash(cpu, nil, cfg) + " → " +
				hash(with(cpu, func(d *deployment.Desired) { d.CPUs, d.Labels = 2, map[string]string{"zone": "eu"} }), nil, cfg) + ") and replicas 2 → 3"}}},
		{name: "scale to zero", desired: []deployment.Desired{with(cpu, func(d *deployment.Desired) { d.Replicas = 0 })},
			services: []Service{svc(cpu, nil, cfg)}, want: want{updates: []string{"cpu: scale to zero (from 2)"}}},
		{name: "remove managed services no deployment wants", services: []Service{svc(cpu, nil, cfg), {ID: "id-old", Name: "nlp-old", SpecHash: "x", Replicas: 1}},
			want: want{removes: []string{"nlp-cpu: no deployment wants it", "nlp-old: no deployment wants it"}}},
		{name: "a GPU deployment is placed by best fit and pinned", desired: []deployment.Desired{gpu}, inv: node(free80),
			want: want{creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a"}, assigns: assignA}},
		{name: "unplaceable with placement's reason; its service is left alone", desired: []deployment.Desired{gpu, cpu},
			services: []Service{svc(gpu, pinA, cfg), svc(cpu, nil, cfg)}, inv: node(),
			want: want{unplaceable: []string{"gpu: " + noRoom}, unchanged: []string{"cpu"}}},
		{name: "a held assignment that still fits is kept", desired: []deployment.Desired{gpu}, services: []Service{svc(gpu, pinA, cfg)},
			inv: heldA(8 << 30), want: want{unchanged: []string{"gpu"}}},
		{name: "a changed GPU request is placed anew", desired: []deployment.Desired{gpu}, services: []Service{svc(gpu, pinA, cfg)},
			inv: heldA(4 << 30), want: want{assigns: assignA, unchanged: []string{"gpu"}}},
		{name: "a GPU deployment at zero frees its GPU and its replica service goes",
			desired:  []deployment.Desired{with(gpu, func(d *deployment.Desired) { d.Replicas = 0 })},
			services: []Service{svc(gpu, pinA, cfg)}, inv: heldA(8 << 30),
			want: want{frees: []string{"gpu"}, unchanged: []string{"gpu"}, removes: []string{"nlp-gpu-g0: replica service not wanted: gpu runs 0 GPU replica(s)"}}},
		{name: "back from zero places again", desired: []deployment.Desired{gpu}, inv: node(free80),
			want: want{assigns: assignA, creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a"}}},
		{name: "an undeployed GPU model frees its GPU and its service goes", services: []Service{svc(gpu, pinA, cfg)}, inv: heldA(8 << 30),
			want: want{frees: []string{"gpu"}, removes: []string{"nlp-gpu-g0: no deployment wants it"}}},
		{name: "a GPU model moved to CPU frees its GPU: its CPU service replaces the replica service",
			desired:  []deployment.Desired{with(gpu, func(d *deployment.Desired) { d.GPUs, d.GPUMemory = 0, 0 })},
			services: []Service{svc(gpu, pinA, cfg)}, inv: heldA(8 << 30),
			want: want{frees: []string{"gpu"}, creates: []string{"gpu: new: version 1, 1 replica(s) on go"}, removes: []string{"nlp-gpu-g0: no deployment wants it"}}},
		// issue 16: each GPU replica its own node and GPU
		{name: "two replicas of a 1-GPU model take two nodes", desired: []deployment.Desired{gpu2}, inv: two(false),
			want: want{assigns: assign(placed(pinOn(0, "n1", "GPU-a")), placed(pinOn(1, "n2", "GPU-b"))),
				creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a", "gpu: new: version 1, 1 replica(s) on go pinned to node n2 GPU GPU-b"}}},
		{name: "scale up keeps the running replica and places the new one on another node", desired: []deployment.Desired{gpu2},
			services: []Service{svc(gpu, pinOn(0, "n2", "GPU-b"), cfg)}, inv: two(false, "n2/GPU-b"),
			want: want{assigns: assign(pinOn(0, "n2", "GPU-b"), placed(pinOn(1, "n1", "GPU-a"))),
				creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a"}}},
		{name: "scale down gives the last slot's GPU back and removes its service", desired: []deployment.Desired{gpu},
			services: []Service{svc(gpu, pinOn(0, "n1", "GPU-a"), cfg), svc(gpu, pinOn(1, "n2", "GPU-b"), cfg)}, inv: two(false, "n1/GPU-a", "n2/GPU-b"),
			want: want{assigns: assign(pinOn(0, "n1", "GPU-a")), unchanged: []string{"gpu"},
				removes: []string{"nlp-gpu-g1: replica service not wanted: gpu runs 1 GPU replica(s)"}}},
		{name: "a replica whose node is lost is re-placed on a node without one: a start-first update of its service", desired: []deployment.Desired{gpu2},
			services: []Service{svc(gpu, pinOn(0, "n1", "GPU-a"), cfg), svc(gpu, pinOn(1, "n2", "GPU-b"), cfg)}, inv: two(true, "n1/GPU-a", "n2/GPU-b"),
			want: want{assigns: assign(pinOn(0, "n1", "GPU-a"), placed(pinOn(1, "n3", "GPU-c"))),
				updates: []string{"gpu: re-placed pinned to node n3 GPU GPU-c (spec " + hash(gpu, pinOn(1, "n2", "GPU-b"), cfg) + " → " + hash(gpu, pinOn(1, "n3", "GPU-c"), cfg) + "): rolling update"}}},
		{name: "a replica whose node is lost keeps its slot when nothing else fits", desired: []deployment.Desired{gpu2},
			services: []Service{svc(gpu, pinOn(0, "n1", "GPU-a"), cfg), svc(gpu, pinOn(1, "n2", "GPU-b"), cfg)},
			inv: func() placement.Snapshot {
				s := two(true, "n1/GPU-a", "n2/GPU-b")
				s.Nodes = s.Nodes[:2]
				s.Nodes[0].GPUs[0].Free = 4 << 30 // NVML: used by something else
				return s
			}(), want: want{unchanged: []string{"gpu"}}},
		{name: "placed in part: the replicas that fit run, the others are short", desired: []deployment.Desired{with(gpu3, func(d *deployment.Desired) { d.GPUMemory = 60 << 30 })},
			inv: func() placement.Snapshot { s := two(false); s.Nodes = s.Nodes[:2]; return s }(),
			want: want{assigns: func() []GPUAssign {
				a := assign(placed(pinOn(0, "n1", "GPU-a")), placed(pinOn(1, "n2", "GPU-b")))
				for i := range a[0].Assignments {
					a[0].Assignments[i].Memory = 60 << 30
				}
				return a
			}(), short: []string{"gpu: 2 of 3 replicas placed; the others: no node with 1 GPU(s) of 60 GiB free GPU memory; largest free: 20 GiB on ml-1 (2 node(s) without 1 GPU(s) of 60 GiB free)"},
				creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a", "gpu: new: version 1, 1 replica(s) on go pinned to node n2 GPU GPU-b"}}},
		{name: "a service of the one-service-per-model design is replaced by replica services", desired: []deployment.Desired{gpu2},
			services: []Service{{ID: "id-old", Name: "nlp-gpu", Model: "gpu", SpecHash: "x", Replicas: 2}}, inv: two(false),
			want: want{assigns: assign(placed(pinOn(0, "n1", "GPU-a")), placed(pinOn(1, "n2", "GPU-b"))),
				creates: []string{"gpu: new: version 1, 1 replica(s) on go pinned to node n1 GPU GPU-a", "gpu: new: version 1, 1 replica(s) on go pinned to node n2 GPU GPU-b"},
				removes: []string{"nlp-gpu: replica service not wanted: gpu runs 2 GPU replica(s)"}}},
		// issue 18 item 7: CPU replicas spread by Swarm's MaxReplicas
		{name: "CPU replicas get a per-node cap from the eligible nodes: a spread change is a rolling update",
			desired: []deployment.Desired{cpu}, services: []Service{svc(cpu, nil, cfg)}, inv: two(false),
			want: want{updates: []string{"cpu: spec changed (" + hash(cpu, nil, cfg) + " → " +
				BuildSpec(Desired{Desired: cpu, MaxPerNode: 1}, cfg).Annotations.Labels[LabelSpecHash] + "): rolling update"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			if c.Image == "" {
				c = cfg
			}
			p := Diff(tt.desired, tt.services, tt.inv, c)
			got := want{assigns: p.GPUAssigns, frees: p.GPUFrees, unchanged: p.Unchanged}
			for _, u := range p.Short {
				got.short = append(got.short, u.Model+": "+u.Reason)
			}
			for _, ch := range p.Creates {
				got.creates = append(got.creates, ch.Model+": "+ch.Why)
			}
			for _, ch := range p.Updates {
				got.updates = append(got.updates, ch.Model+": "+ch.Why)
			}
			for _, r := range p.Removes {
				got.removes = append(got.removes, r.Service+": "+r.Why)
			}
			for _, u := range p.Unplaceable {
				got.unplaceable = append(got.unplaceable, u.Model+": "+u.Reason)
			}
			w := tt.want
			for _, s := range []*[]string{&w.creates, &w.updates, &w.removes, &w.unchanged, &w.unplaceable, &w.frees, &w.short,
				&got.creates, &got.updates, &got.removes, &got.unchanged, &got.unplaceable, &got.frees, &got.short} {
				if len(*s) == 0 {
					*s = nil
				}
			}
			if len(w.assigns) == 0 {
				w.assigns = nil
			}
			if len(got.assigns) == 0 {
				got.assigns = nil
			}
			if !reflect.DeepEqual(got, w) {
				t.Fatalf("plan\n got  %+v\n want %+v", got, w)
			}
			// the plan's specs are what BuildSpec makes, pinned where placed,
			// on the image of their engine
			for _, ch := range append(p.Creates, p.Updates...) {
				if ch.Spec.Annotations.Labels[LabelSpecHash] != ch.SpecHash || ch.Spec.Annotations.Name != ch.Service {
					t.Errorf("%s: spec %s / hash %s", ch.Model, ch.Spec.Annotations.Name, ch.SpecHash)
				}
				eng, err := c.Engine(ch.Desired.Backend)
				if err != nil || ch.Backend != eng.Backend || ch.Spec.TaskTemplate.ContainerSpec.Image != eng.Image {
					t.Errorf("%s: backend %s on %s, want %+v (%v)", ch.Model, ch.Backend, ch.Spec.TaskTemplate.ContainerSpec.Image, eng, err)
				}
			}
			if p.Empty() != (len(w.creates)+len(w.updates)+len(w.removes)+len(w.unplaceable)+len(w.frees)+len(w.assigns)+len(w.short) == 0) {
				t.Errorf("Empty() = %v", p.Empty())
			}
		})
	}
}
