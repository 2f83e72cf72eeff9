//go:build !cgo

package agent

import "fmt"

// NVML in a static (CGO_ENABLED=0) build cannot load libnvidia-ml: it always
// reports ErrNoNVML, so the agent of the static image reports zero GPUs. The
// stack's agent runs the cgo build (the nlpswarm-agent image,
// deployments/images/agent).
type NVML struct{}

// Read implements Source.
func (*NVML) Read() (Inventory, error) {
	return Inventory{}, fmt.Errorf("%w: static build without cgo (GPU nodes run the nlpswarm-agent image)", ErrNoNVML)
}
