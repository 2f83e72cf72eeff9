package agent

import (
	"fmt"
	"os"
	"strings"
)

// PID namespaces and NVML's processes. The nodes page tells the platform's
// replicas from other GPU processes by pid, the replicas' pids being the
// host's (Swarm's task status: dockerd reports host pids). What pids NVML
// gives depends on the caller's pid namespace and the driver:
//
//   - drivers that do not know pid namespaces report host pids from
//     anywhere (NVIDIA's answer in NVIDIA/nvidia-docker#1483, 2021: "the
//     nvidia-driver itself does not support pid-namespaces, so anytime you
//     query it for the set of processes that are using GPUs, you will
//     always get the host pids");
//   - current drivers translate each process's pid into the caller's
//     namespace and leave out the processes not visible there
//     (NVIDIA/open-gpu-kernel-modules, src/nvidia/src/kernel/gpu/gpu_rmapi.c:
//     gpuGetProcWithObject converts each client's pid with _gpuConvertPid,
//     that is osFindNsPid, and skips the ones not found; driver 560 listing
//     a process by its container pid in Project-HAMi/HAMi-core#112): from a
//     container with a pid namespace of its own, NVML lists only that
//     container's processes, none of the replicas' or anyone else's.
//
// Only the host's pid namespace gives host pids on every driver, and a
// Swarm service cannot have it: `pid: host` is ignored by `docker stack
// deploy` and the service API has no pid mode (moby/swarmkit#1605, open
// since 2016; docker/docs#12993). So the stack's agent service, on a
// current driver, reports no processes and the nodes page shows no memory
// used by others (the GPU's used memory, which NVML reports for the whole
// device, still shows it). The agent says so (PIDNamespace, ProcessNote,
// and a warning at start); README, "GPU nodes", gives the way around it:
// run the agent outside Swarm with --pid=host.

// PID namespace values of Inventory.PIDNamespace.
const (
	PIDNamespaceHost      = "host"      // the initial one: NVML's pids are host pids
	PIDNamespaceContainer = "container" // a nested one (see above)
)

// processNote is Inventory.ProcessNote in a nested pid namespace.
const processNote = "the agent runs in a pid namespace of its own (a Swarm service cannot share the host's): " +
	"current NVIDIA drivers list only the GPU processes of that namespace, so other containers' " +
	"and the host's processes are missing and the nodes page cannot tell their memory; run the agent with --pid=host (README, GPU nodes)"

// NestedPIDNamespace reports whether the process whose /proc/PID/status is
// status runs in a nested pid namespace: its NSpid line (Linux 4.1+) lists
// its pid in each namespace from the initial one down, so more than one
// means nested. A status without NSpid is an error (too old a kernel, or
// not Linux's).
func NestedPIDNamespace(status string) (bool, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			n := len(strings.Fields(v))
			if n == 0 {
				return false, fmt.Errorf("empty NSpid line in /proc/self/status")
			}
			return n > 1, nil
		}
	}
	return false, fmt.Errorf("no NSpid line in /proc/self/status (Linux before 4.1?)")
}

// selfStatus is /proc/self/status; a variable for tests.
var selfStatus = func() (string, error) {
	b, err := os.ReadFile("/proc/self/status")
	return string(b), err
}

// pidNamespace is the agent's PID namespace (PIDNamespaceHost or
// PIDNamespaceContainer) and, for a nested one, the note; "" when it cannot
// tell.
func pidNamespace() (string, string) {
	status, err := selfStatus()
	if err != nil {
		return "", ""
	}
	nested, err := NestedPIDNamespace(status)
	switch {
	case err != nil:
		return "", ""
	case nested:
		return PIDNamespaceContainer, processNote
	}
	return PIDNamespaceHost, ""
}
