package scheduler

import (
	"slices"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// A model's canary is a service of its own beside the stable one: its own
// name, version, resources and replica count, its runtime serving the
// model's name; the stable service's spec (and hash) is the same as without
// a canary, so nothing rolls when one comes or goes.
func TestDiffCanary(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:img1", Network: "net", ArtifactBaseURL: "http://apiserver:8081"}
	stable := deployment.Desired{Model: "senti", Track: deployment.TrackStable, Task: "text-classification", Version: 1, Digest: "sha256:aa", Replicas: 3, Generation: 2}
	canary := deployment.Desired{Model: "senti", Track: deployment.TrackCanary, Task: "text-classification", Version: 2, Digest: "sha256:bb", Replicas: 1,
		Resources: deployment.Resources{CPUs: 1, MemoryReservation: 512 << 20}, Generation: 1}
	inv := placement.Snapshot{Nodes: []placement.Node{{ID: "n1", Hostname: "ml-1", Available: true}}}

	p := Diff([]deployment.Desired{stable, canary}, nil, inv, cfg)
	if len(p.Creates) != 2 || p.Creates[0].Service != "nlp-senti" || p.Creates[1].Service != "nlp-senti_canary" {
		t.Fatalf("creates: %+v", p.Creates)
	}
	st, ca := p.Creates[0].Spec, p.Creates[1].Spec
	if p.Creates[1].Model != "senti_canary" || ca.Annotations.Labels[LabelTrack] != "canary" || ca.Annotations.Labels[LabelModel] != "senti" ||
		ca.Annotations.Labels[LabelVersion] != "2" || replicas(ca) != 1 || ca.TaskTemplate.Resources.Limits.NanoCPUs != 1e9 {
		t.Fatalf("canary spec: %+v", ca.Annotations.Labels)
	}
	if !slices.Contains(ca.TaskTemplate.ContainerSpec.Args, "--name=senti") {
		t.Fatalf("the canary's runtime must serve the model's name: %v", ca.TaskTemplate.ContainerSpec.Args)
	}
	if _, ok := st.Annotations.Labels[LabelTrack]; ok {
		t.Fatal("the stable service got a track label: existing stacks would roll")
	}
	alone := Diff([]deployment.Desired{{Model: "senti", Task: "text-classification", Version: 1, Digest: "sha256:aa", Replicas: 3, Generation: 2}}, nil, inv, cfg)
	if alone.Creates[0].SpecHash != p.Creates[0].SpecHash {
		t.Fatalf("stable spec differs with a canary beside it: %s vs %s", alone.Creates[0].SpecHash, p.Creates[0].SpecHash)
	}

	// both services as Swarm lists them: nothing to do; the canary gone
	// from the desired state: its service (only) is removed
	list := []Service{}
	for _, c := range p.Creates {
		list = append(list, serviceOf(swarm.Service{ID: "id-" + c.Service, Spec: c.Spec}, time.Now()))
	}
	if list[1].Model != "senti_canary" {
		t.Fatalf("listed canary service keyed %q", list[1].Model)
	}
	if again := Diff([]deployment.Desired{stable, canary}, list, inv, cfg); !again.Empty() {
		t.Fatalf("second pass: %+v", again)
	}
	gone := Diff([]deployment.Desired{stable}, list, inv, cfg)
	if len(gone.Removes) != 1 || gone.Removes[0].Service != "nlp-senti_canary" || len(gone.Updates)+len(gone.Creates) != 0 {
		t.Fatalf("canary retired: %+v", gone)
	}
	// a promote: stable takes version 2 and rolls; the canary is untouched
	promoted := stable
	promoted.Version, promoted.Digest, promoted.Generation = 2, "sha256:bb", 3
	roll := Diff([]deployment.Desired{promoted, canary}, list, inv, cfg)
	if len(roll.Updates) != 1 || roll.Updates[0].Service != "nlp-senti" || !roll.Updates[0].SpecChanged || replicas(roll.Updates[0].Spec) != 3 ||
		roll.Updates[0].StopFirst {
		t.Fatalf("promote roll: %+v", roll.Updates)
	}
	// a new canary (version 3) taking over the previous one's service
	// within its drain rolls it stop-first; the same canary resized rolls
	// start-first
	next := canary
	next.Version, next.Digest, next.Generation = 3, "sha256:cc", 2
	takeover := Diff([]deployment.Desired{stable, next}, list, inv, cfg)
	if len(takeover.Updates) != 1 || takeover.Updates[0].Service != "nlp-senti_canary" || !takeover.Updates[0].StopFirst {
		t.Fatalf("canary takeover: %+v", takeover.Updates)
	}
	bigger := canary
	bigger.CPUs, bigger.Generation = 2, 2
	resized := Diff([]deployment.Desired{stable, bigger}, list, inv, cfg)
	if len(resized.Updates) != 1 || resized.Updates[0].Service != "nlp-senti_canary" || resized.Updates[0].StopFirst {
		t.Fatalf("canary resized: %+v", resized.Updates)
	}
}

// A canary task runs the desired version when its --digest argument is the
// desired artifact's: a task of the previous canary (a service taken over
// within its drain) does not, and keeps the canary from running (observe).
func TestRunsDigest(t *testing.T) {
	task := func(args ...string) swarm.Task {
		return swarm.Task{Spec: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Args: args}}}
	}
	for _, c := range []struct {
		t    swarm.Task
		want bool
	}{
		{task("runtime", "--name=m", "--digest=sha256:aa", "--listen=:8080"), true},
		{task("runtime", "--name=m", "--digest=sha256:bb"), false},
		{task("runtime", "--name=m"), true},
		{swarm.Task{}, true},
	} {
		if got := runsDigest(c.t, "sha256:aa"); got != c.want {
			t.Errorf("%v: %v, want %v", c.t.Spec.ContainerSpec, got, c.want)
		}
	}
}
