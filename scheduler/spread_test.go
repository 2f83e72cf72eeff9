package scheduler

import (
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// The spread decision (issue 18 item 7): replicas never share a node when a
// spare node exists, share only as much as the count forces otherwise, and a
// start-first update always has room for its one extra task.
func TestMaxPerNode(t *testing.T) {
	tests := []struct {
		replicas, eligible int
		want               uint64
	}{
		{2, 0, 0}, // no inventory: no cap
		{2, 1, 0}, // a one-node swarm: every replica and the update's surplus on it
		{0, 3, 0}, // at zero
		{1, 2, 1}, // the update's new task goes to the other node
		{2, 3, 1}, // hard: never two on one node
		{3, 3, 2}, // 3 replicas + 1 surplus on 3 nodes
		{2, 2, 2}, // both nodes full: the surplus needs a second place on one
		{3, 2, 2},
		{4, 2, 3},
		{5, 10, 1},
	}
	for _, tt := range tests {
		got := MaxPerNode(tt.replicas, tt.eligible)
		if got != tt.want {
			t.Errorf("MaxPerNode(%d, %d) = %d, want %d", tt.replicas, tt.eligible, got, tt.want)
		}
		// the cap never blocks the replicas plus a start-first surplus
		if got > 0 && int(got)*tt.eligible < tt.replicas+1 {
			t.Errorf("MaxPerNode(%d, %d) = %d leaves no room for a start-first update", tt.replicas, tt.eligible, got)
		}
	}
}

func TestEligibleNodes(t *testing.T) {
	ml := map[string]string{"type": "machine-learning", "zone": "eu"}
	nodes := []placement.Node{
		{ID: "a", Role: "worker", Labels: ml},
		{ID: "b", Role: "worker", Labels: ml, Available: false}, // down, not drained: still counts
		{ID: "c", Role: "worker", Labels: ml, Drained: true},
		{ID: "d", Role: "manager", Labels: map[string]string{"type": "machine-learning"}},
		{ID: "e", Role: "worker"},
	}
	tests := []struct {
		name       string
		labels     map[string]string
		constraint string
		want       int
	}{
		{"every node not drained", nil, "", 4},
		{"the cluster's label constraint", nil, "node.labels.type==machine-learning", 3},
		{"and the deployment's labels", map[string]string{"zone": "eu"}, "node.labels.type == machine-learning", 2},
		{"a role constraint", nil, "node.role==worker", 3},
		{"a negated constraint", nil, "node.role!=manager", 3},
		{"an unknown form is taken as satisfied", nil, "engine.labels.x==y", 4},
	}
	for _, tt := range tests {
		d := deployment.Desired{Resources: deployment.Resources{Labels: tt.labels}}
		if got := EligibleNodes(d, nodes, tt.constraint); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}
