package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpswarm/nlpswarm/scheduler/agent"
)

// TestAgentPrint: `agent --print` is what an operator runs on a node to see
// what the agent would report: the fixture's H100 through --fakegpus, and,
// with no GPU (this static test binary), zero GPUs and the reason. It needs
// no database and no node ID.
func TestAgentPrint(t *testing.T) {
	fixture := filepath.Join("..", "..", "..", "shared", "fixtures", "nvml-h100.json")
	if _, err := os.Stat(fixture); err != nil {
		t.Skipf("nvml fixture absent: %v", err)
	}
	fixture, _ = filepath.Abs(fixture)
	for _, tc := range []struct {
		name       string
		args       []string
		wantGPU    string
		wantReason string
	}{
		{"the fixture's H100", []string{"agent", "--print", "--fakegpus=" + fixture}, "NVIDIA H100 80GB HBM3", ""},
		{"no GPU here", []string{"agent", "--print"}, "", "NVML not available: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := runBin(t, nil, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var inv agent.Inventory
			if err := json.Unmarshal([]byte(out), &inv); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if tc.wantGPU != "" && (len(inv.GPUs) != 1 || inv.GPUs[0].Name != tc.wantGPU || inv.GPUs[0].MemFree != 85017493504 || inv.Reason != "") {
				t.Fatalf("printed %+v", inv)
			}
			if tc.wantGPU == "" && (len(inv.GPUs) != 0 || !strings.HasPrefix(inv.Reason, tc.wantReason)) {
				t.Fatalf("printed %+v", inv)
			}
		})
	}
}
