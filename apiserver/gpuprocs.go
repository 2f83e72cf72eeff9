package apiserver

import "github.com/nlpswarm/nlpswarm/internal/deployment"

// replicaPIDs maps the main process of each replica the reconciler observed
// on node n (by hostname or ID, as tasks name their node) to its model.
func replicaPIDs(recs []deployment.Record, n Node) map[int]string {
	out := map[int]string{}
	for _, r := range recs {
		for _, t := range r.Observed.Tasks {
			if t.PID > 0 && (t.Node == n.Hostname || t.Node == n.ID) {
				out[t.PID] = r.Model
			}
		}
	}
	return out
}

// attributeProcesses names the model of each GPU process that is one of the
// platform's replicas (replicas: pid → model, on the GPU's node) and sums
// the memory of the others: what something the platform did not place uses.
// NVML and Swarm's task status both give pids in the node's namespace. A
// replica's process is the container's main process (the runtime), so a
// child process it started would count as another's.
func attributeProcesses(procs []GPUProcess, replicas map[int]string) ([]GPUProcess, int64) {
	out := make([]GPUProcess, 0, len(procs))
	var other int64
	for _, p := range procs {
		p.Model = replicas[p.PID]
		if p.Model == "" {
			other += p.MemoryBytes
		}
		out = append(out, p)
	}
	return out, other
}
