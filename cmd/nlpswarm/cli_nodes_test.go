//go:build !agentonly

package main

import (
	"reflect"
	"testing"

	"github.com/nlpswarm/nlpswarm/apiserver"
)

func TestNodeRows(t *testing.T) {
	const gib = 1 << 30
	reason := "NVML not available: libnvidia-ml.so.1 not found"
	for _, tc := range []struct {
		name string
		node apiserver.Node
		want [][]string
	}{
		{"a GPU node: per GPU, free memory and what others use",
			apiserver.Node{ID: "abcdefghijklmnop", Hostname: "gpu-1", Role: "worker", Availability: "active", State: "ready", MemoryBytes: 64 * gib,
				Labels: map[string]string{"type": "machine-learning", "gpu": "true"},
				GPUs: []apiserver.GPU{
					{Index: 0, UUID: "GPU-a", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 * gib, MemoryFree: 70 * gib, OtherMemory: 3 * gib},
					{Index: 1, UUID: "GPU-b", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 * gib, MemoryFree: 80 * gib},
				}},
			[][]string{
				{"gpu-1", "abcdefghijkl", "worker", "active", "ready", "64.0 GiB", "2", "gpu=true,type=machine-learning"},
				{"  gpu0", "GPU-a", "NVIDIA H100 80GB HBM3", "", "", "70.0 GiB free", "of 80.0 GiB", "others: 3.0 GiB"},
				{"  gpu1", "GPU-b", "NVIDIA H100 80GB HBM3", "", "", "80.0 GiB free", "of 80.0 GiB", "others: none"},
			}},
		{"a CPU-only node: why it has no GPU",
			apiserver.Node{ID: "cpu1", Hostname: "cpu-1", Role: "worker", Availability: "active", State: "ready", MemoryBytes: 8 * gib, GPUReason: reason},
			[][]string{
				{"cpu-1", "cpu1", "worker", "active", "ready", "8.0 GiB", "0", ""},
				{"  no GPU", "", "", "", "", "", "", reason},
			}},
		{"a node no agent reported on: nothing more",
			apiserver.Node{ID: "mgr", Hostname: "manager", Role: "manager", Availability: "active", State: "ready"},
			[][]string{{"manager", "mgr", "manager", "active", "ready", "0.0 B", "0", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nodeRows([]apiserver.Node{tc.node}); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
