//go:build !cgo

package agent

// NVML in a static (CGO_ENABLED=0) build cannot load libnvidia-ml: it always
// reports ErrNoNVML, so the agent of the static image reports zero GPUs. GPU
// nodes run the cgo build (make agent → bin/nlpswarm-agent).
type NVML struct{}

// Read implements Source.
func (*NVML) Read() (Inventory, error) { return Inventory{}, ErrNoNVML }
