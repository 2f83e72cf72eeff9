package apiserver

import (
	"reflect"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

func TestAttributeProcesses(t *testing.T) {
	const gib = 1 << 30
	replicas := map[int]string{4242: "sentiment", 5151: "ner"}
	for _, tc := range []struct {
		name      string
		procs     []GPUProcess
		wantModel []string
		wantOther int64
	}{
		{"no process", nil, []string{}, 0},
		{"only the platform's replicas", []GPUProcess{{PID: 4242, MemoryBytes: 6 * gib}, {PID: 5151, MemoryBytes: gib}}, []string{"sentiment", "ner"}, 0},
		{"a process nobody placed beside a replica", []GPUProcess{{PID: 4242, MemoryBytes: 6 * gib}, {PID: 999, MemoryBytes: 3 * gib}}, []string{"sentiment", ""}, 3 * gib},
		{"two others, one of unknown memory (NVML: not available)", []GPUProcess{{PID: 1, MemoryBytes: gib}, {PID: 2, MemoryBytes: 0}}, []string{"", ""}, gib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, other := attributeProcesses(tc.procs, replicas)
			models := []string{}
			for _, p := range got {
				models = append(models, p.Model)
			}
			if !reflect.DeepEqual(models, tc.wantModel) || other != tc.wantOther || got == nil {
				t.Fatalf("models %v, other %d; want %v, %d", models, other, tc.wantModel, tc.wantOther)
			}
		})
	}
}

// Only the replicas on the node count, named by hostname or ID, and only
// those that run (pid 0: not started).
func TestReplicaPIDs(t *testing.T) {
	recs := []deployment.Record{
		{Model: "sentiment", Observed: deployment.Observed{Tasks: []deployment.TaskState{
			{Slot: 0, Node: "gpu-1", PID: 4242}, {Slot: 1, Node: "gpu-2", PID: 4343}, {Slot: 2, Node: "gpu-1"},
		}}},
		{Model: "ner", Observed: deployment.Observed{Tasks: []deployment.TaskState{{Slot: 0, Node: "nodeid1", PID: 5151}}}},
	}
	got := replicaPIDs(recs, Node{ID: "nodeid1", Hostname: "gpu-1"})
	if want := map[int]string{4242: "sentiment", 5151: "ner"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
