//go:build cgo

package agent

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML reads GPUs through libnvidia-ml, which go-nvml dlopens at run time
// (libnvidia-ml.so.1; the binary does not link it): a node without the
// driver gets ErrNoNVML, never a crash.
type NVML struct {
	once sync.Once
	err  error
}

func (n *NVML) init() error {
	n.once.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				n.err = fmt.Errorf("%w: %v", ErrNoNVML, r)
			}
		}()
		switch ret := nvml.Init(); ret {
		case nvml.SUCCESS:
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			n.err = fmt.Errorf("%w: %s", ErrNoNVML, noLibrary)
		default:
			n.err = fmt.Errorf("%w: %s", ErrNoNVML, nvml.ErrorString(ret))
		}
	})
	return n.err
}

// noLibrary is the reason where dlopen finds no libnvidia-ml.so.1: the
// driver gives it, the NVIDIA container runtime or a bind mount puts it in
// the agent's container (README, "GPU nodes").
const noLibrary = "libnvidia-ml.so.1 not found (no NVIDIA driver on this node, or not given to the container: NVIDIA container runtime as the default runtime, or a bind mount)"

// Read implements Source.
func (n *NVML) Read() (Inventory, error) {
	if err := n.init(); err != nil {
		return Inventory{}, err
	}
	var inv Inventory
	inv.Driver, _ = nvml.SystemGetDriverVersion()
	inv.CUDA, _ = nvml.SystemGetCudaDriverVersion()
	count, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return inv, fmt.Errorf("nvml device count: %s", nvml.ErrorString(ret))
	}
	for i := 0; i < count; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return inv, fmt.Errorf("nvml device %d: %s", i, nvml.ErrorString(ret))
		}
		g := GPU{Index: i}
		g.UUID, _ = d.GetUUID()
		g.Name, _ = d.GetName()
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemTotal, g.MemUsed, g.MemFree = int64(mem.Total), int64(mem.Used), int64(mem.Free)
		}
		if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
			g.UtilGPU, g.UtilMem = int(u.Gpu), int(u.Memory)
		}
		if cur, _, ret := d.GetMigMode(); ret == nvml.SUCCESS {
			g.MIGMode = cur
		}
		if ps, ret := d.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
			for _, p := range ps[:min(len(ps), MaxProcesses)] {
				g.Processes = append(g.Processes, processOf(p.Pid, p.UsedGpuMemory))
			}
		}
		inv.GPUs = append(inv.GPUs, g)
	}
	return inv, nil
}

// notAvailable is NVML's NVML_VALUE_NOT_AVAILABLE ((unsigned long long)-1):
// the memory of a process NVML may not read (another container's without
// permission, a MIG instance's).
const notAvailable = ^uint64(0)

// processOf is one process of NVML's running compute processes.
func processOf(pid uint32, used uint64) Process {
	if used == notAvailable {
		used = 0
	}
	return Process{PID: pid, Memory: int64(min(used, 1<<62))}
}
