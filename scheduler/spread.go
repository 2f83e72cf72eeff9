package scheduler

import (
	"strings"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
	"github.com/nlpswarm/nlpswarm/scheduler/placement"
)

// MaxPerNode is the spread decision for a model service whose replicas Swarm
// places (a CPU deployment's; each GPU replica is placed by the scheduler,
// on a node of its own while another fits: placement.PlaceSpread). Given
// the replica count and the nodes eligible for it, it returns Swarm's
// MaxReplicas per node, 0 for no cap:
//
//   - fewer than 2 eligible nodes: no cap (a one-node swarm must still run
//     every replica, and a start-first update its surplus task);
//   - otherwise ceil((replicas+1)/eligible): the smallest cap under which the
//     eligible nodes hold every replica plus the one extra task of a
//     start-first rolling update (parallelism 1). With more eligible nodes
//     than replicas that is 1: replicas never share a node, a hard rule,
//     and the update's new task goes to a node without one; with as many
//     or fewer, replicas share nodes only as much as the count forces, plus
//     one, Swarm's spread preference on node.id doing the rest.
//
// Without the cap a node that came back after a drain or a failure took no
// replicas back (Swarm does not rebalance), so a later drain of the node
// that held both replicas of a model lost 82 % of a run (issue 18 item 7).
func MaxPerNode(replicas, eligible int) uint64 {
	if eligible < 2 || replicas <= 0 {
		return 0
	}
	return uint64((replicas + eligible) / eligible)
}

// EligibleNodes counts the nodes a deployment's replicas may run on: not
// drained (an operator's decision; a node that is only down still counts,
// so a power cut does not change every service's cap, a rolling update of
// the whole cluster at the worst moment), with the deployment's placement
// labels and satisfying the cluster's placement constraint. Constraint
// forms other than node.labels.K and node.role with == or != are taken as
// satisfied.
func EligibleNodes(d deployment.Desired, nodes []placement.Node, constraint string) int {
	n := 0
nodes:
	for _, node := range nodes {
		if node.Drained || !satisfies(node, constraint) {
			continue
		}
		for k, v := range d.Labels {
			if node.Labels[k] != v {
				continue nodes
			}
		}
		n++
	}
	return n
}

// satisfies evaluates one Swarm constraint expression on node.
func satisfies(node placement.Node, constraint string) bool {
	op, neg := "==", false
	if strings.Contains(constraint, "!=") {
		op, neg = "!=", true
	}
	key, want, ok := strings.Cut(constraint, op)
	if !ok {
		return true
	}
	key, want = strings.TrimSpace(key), strings.TrimSpace(want)
	var have string
	switch {
	case strings.HasPrefix(key, "node.labels."):
		have = node.Labels[strings.TrimPrefix(key, "node.labels.")]
	case key == "node.role":
		have = node.Role
	default:
		return true
	}
	return (have == want) != neg
}
