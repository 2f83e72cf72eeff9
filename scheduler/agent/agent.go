// Package agent owns the node agent: it reads the node's GPUs through NVML
// and reports them into the inventory (nodes, gpus) every few seconds: per
// GPU its UUID, name, memory total/used/free, utilisation and the compute
// processes using it (pid, GPU memory), so the nodes page can show memory
// used by something the platform did not place. Without NVML (no driver, no
// library, or a static build without cgo) it reports zero GPUs with the
// reason (nodes.gpu_reason) and keeps running; Read is that one decision,
// shared by the reporter and `nlpswarm agent --print`. It never places
// anything, and writes nothing of a node's CPUs or memory (the scheduler
// copies those from Swarm).
//
// NVML needs cgo (nvml_cgo.go; go-nvml dlopens libnvidia-ml.so.1 at run
// time, the binary does not link it): the stack runs the agent from its own
// image, the cgo build on Debian bookworm's glibc
// (deployments/images/agent), and the node gives the driver's library. The
// static build's NVML (nvml_nocgo.go) always answers ErrNoNVML.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// GPU is what NVML tells of one device (the shape of
// shared/fixtures/nvml-h100.json).
type GPU struct {
	Index    int    `json:"index"`
	UUID     string `json:"uuid"`
	Name     string `json:"name"`
	MemTotal int64  `json:"mem_total"`
	MemUsed  int64  `json:"mem_used"`
	MemFree  int64  `json:"mem_free"`
	UtilGPU  int    `json:"util_gpu"`
	UtilMem  int    `json:"util_mem"`
	MIGMode  int    `json:"mig_mode"`
	// Processes are the compute processes NVML sees on the GPU (the
	// platform's replicas and anything else) with their GPU memory, as
	// pids of the host's PID namespace when the agent runs in it; in a
	// container's, current drivers list only that namespace's processes
	// (pidns.go).
	Processes []Process `json:"processes,omitempty"`
}

// Process is one process using a GPU.
type Process struct {
	PID    uint32 `json:"pid"`
	Memory int64  `json:"mem_used"` // bytes; 0 where NVML cannot tell (no permission, MIG)
}

// MaxProcesses bounds the processes stored per GPU (a runaway launcher must
// not grow the inventory row without bound).
const MaxProcesses = 64

// Inventory is one reading.
type Inventory struct {
	Driver string `json:"driver"`
	CUDA   int    `json:"cuda"`
	GPUs   []GPU  `json:"gpus"`
	// Reason says why a reading has no GPUs (nodes.gpu_reason); Read fills
	// it, a Source need not.
	Reason string `json:"reason,omitempty"`
	// PIDNamespace is the agent's (PIDNamespaceHost or
	// PIDNamespaceContainer; "" when it cannot tell), which decides what
	// the GPUs' Processes are (pidns.go); ProcessNote says what is missing
	// when it is not the host's. Read fills both where there are GPUs.
	PIDNamespace string `json:"pid_namespace,omitempty"`
	ProcessNote  string `json:"process_note,omitempty"`
}

// Source reads GPUs: NVML on a GPU node, a fake in tests.
type Source interface {
	Read() (Inventory, error)
}

// ErrNoNVML means the node has no usable NVML: zero GPUs, not a failure.
var ErrNoNVML = errors.New("NVML not available")

// Reporter writes a node's inventory into Postgres.
type Reporter struct {
	DB      *pgxpool.Pool
	NodeID  string
	Source  Source
	Log     *slog.Logger
	Metrics *Metrics // optional
}

// Metrics are the GPU gauges the agent exports for Prometheus.
type Metrics struct {
	total, free, util *prometheus.GaugeVec
}

// NewMetrics registers the GPU gauges on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"node", "uuid", "name"}
	m := &Metrics{
		total: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_agent_gpu_memory_total_bytes", Help: "GPU memory, as NVML reports it."}, labels),
		free:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_agent_gpu_memory_free_bytes", Help: "Free GPU memory, as NVML reports it."}, labels),
		util:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nlpswarm_agent_gpu_utilization_ratio", Help: "GPU utilisation (0-1)."}, labels),
	}
	reg.MustRegister(m.total, m.free, m.util)
	return m
}

func (m *Metrics) set(node string, inv Inventory) {
	if m == nil {
		return
	}
	m.total.Reset()
	m.free.Reset()
	m.util.Reset()
	for _, g := range inv.GPUs {
		m.total.WithLabelValues(node, g.UUID, g.Name).Set(float64(g.MemTotal))
		m.free.WithLabelValues(node, g.UUID, g.Name).Set(float64(g.MemFree))
		m.util.WithLabelValues(node, g.UUID, g.Name).Set(float64(g.UtilGPU) / 100)
	}
}

// Read reads src once. Without NVML it is zero GPUs and the reason, not an
// error; a reading with no GPU says so too (NVML answered but found none),
// so a node without GPUs always tells why. An error is a failed read.
func Read(src Source) (Inventory, error) {
	inv, err := src.Read()
	if errors.Is(err, ErrNoNVML) {
		return Inventory{GPUs: []GPU{}, Reason: err.Error()}, nil
	}
	if err != nil {
		return Inventory{}, fmt.Errorf("read GPUs: %w", err)
	}
	if inv.GPUs == nil {
		inv.GPUs = []GPU{}
	}
	switch {
	case len(inv.GPUs) > 0:
		inv.Reason = ""
		inv.PIDNamespace, inv.ProcessNote = pidNamespace()
	case inv.Reason == "":
		inv.Reason = fmt.Sprintf("NVML found no GPU (driver %q)", inv.Driver)
	}
	return inv, nil
}

// Report reads once and stores the GPUs of this node, removing vanished
// ones; without GPUs it stores the reason (nodes.gpu_reason).
func (r *Reporter) Report(ctx context.Context) (Inventory, error) {
	inv, err := Read(r.Source)
	if err != nil {
		return inv, err
	}
	r.Metrics.set(r.NodeID, inv)
	err = pgx.BeginFunc(ctx, r.DB, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO nodes (id, gpu_reason) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET gpu_reason = EXCLUDED.gpu_reason`,
			r.NodeID, inv.Reason); err != nil {
			return err
		}
		uuids := []string{}
		for _, g := range inv.GPUs {
			uuids = append(uuids, g.UUID)
			procs := g.Processes
			if procs == nil {
				procs = []Process{}
			}
			procs = procs[:min(len(procs), MaxProcesses)]
			if _, err := tx.Exec(ctx, `INSERT INTO gpus (node_id, uuid, idx, name, memory_total, memory_used, memory_free, util_gpu, util_mem, mig_mode, processes, updated_at)
				VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,now())
				ON CONFLICT (node_id, uuid) DO UPDATE SET idx=EXCLUDED.idx, name=EXCLUDED.name, memory_total=EXCLUDED.memory_total,
					memory_used=EXCLUDED.memory_used, memory_free=EXCLUDED.memory_free, util_gpu=EXCLUDED.util_gpu,
					util_mem=EXCLUDED.util_mem, mig_mode=EXCLUDED.mig_mode, processes=EXCLUDED.processes, updated_at=now()`,
				r.NodeID, g.UUID, g.Index, g.Name, g.MemTotal, g.MemUsed, g.MemFree, g.UtilGPU, g.UtilMem, g.MIGMode, procs); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `DELETE FROM gpus WHERE node_id = $1 AND NOT (uuid = ANY($2))`, r.NodeID, uuids)
		return err
	})
	if err != nil {
		return inv, fmt.Errorf("store inventory of node %s: %w", r.NodeID, err)
	}
	return inv, nil
}

// Run reports every interval until ctx ends; errors are logged, not fatal.
func (r *Reporter) Run(ctx context.Context, interval time.Duration) {
	for {
		inv, err := r.Report(ctx)
		if err != nil {
			r.Log.Warn("inventory", "err", err)
		} else {
			r.Log.Debug("inventory", "gpus", len(inv.GPUs))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
