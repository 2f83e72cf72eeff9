package models

import (
	"errors"
	"fmt"
	"time"

	"github.com/knights-analytics/hugot"
	"github.com/knights-analytics/hugot/backends"
	"github.com/knights-analytics/hugot/options"
)

// Backend names accepted by EngineConfig.Backend.
const (
	BackendGo   = "go"   // hugot's pure-Go backend (GoMLX): no C library
	BackendORT  = "ort"  // ONNX Runtime through hugot's ORT backend: the ORT build only
	BackendAuto = "auto" // ORT when this build has it and its library loads, else go
)

// EngineConfig chooses and tunes the inference engine of a runtime.
type EngineConfig struct {
	Backend     string        `description:"inference engine: auto, ort or go (auto: ort when this binary has it and the library loads)"`
	Threads     int           `description:"threads of one inference (0: the CPUs this process may use)"`
	LibraryDir  string        `description:"folder holding the libonnxruntime.so to load (empty: NLPSWARM_ORT_DIR, then /usr/lib)"`
	WarmTimeout time.Duration `description:"longest time spent compiling input shapes before ready (go backend; cheapest first)"`
}

// DefaultEngineConfig picks the engine by itself.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{Backend: BackendAuto, WarmTimeout: 30 * time.Second}
}

// Backend is one inference engine: it opens the hugot session the pipelines
// run in, and fixes up a pipeline's model once created.
type Backend interface {
	Name() string
	newSession(cfg EngineConfig, dir string) (*hugot.Session, error)
	prepare(m *backends.Model, dir string) error
}

// ErrBackendUnavailable: the backend is not in this binary or its library
// did not load.
var ErrBackendUnavailable = errors.New("backend unavailable")

type goBackend struct{}

func (goBackend) Name() string { return BackendGo }

// newSession pads shapes to power-of-two buckets (shapes.go), which bounds
// the graphs the Go backend compiles and keeps.
func (goBackend) newSession(_ EngineConfig, dir string) (*hugot.Session, error) {
	maxPos, err := maxPositions(dir)
	if err != nil {
		return nil, err
	}
	return hugot.NewGoSession(
		options.WithGoMLXBatchBuckets(batchBuckets(maxBatchDefault)),
		options.WithGoMLXSequenceBuckets(sequenceBuckets(maxPos)),
	)
}

func (goBackend) prepare(*backends.Model, string) error { return nil }

// ortBackend is set by the ORT build (backend_ort.go).
var ortBackend Backend

// chooseBackend resolves cfg.Backend to an engine, as a pure decision: want
// is the configured name, haveORT whether this binary has ORT.
func chooseBackend(want string, haveORT bool) (string, error) {
	switch want {
	case "", BackendAuto:
		if haveORT {
			return BackendORT, nil
		}
		return BackendGo, nil
	case BackendGo:
		return BackendGo, nil
	case BackendORT:
		if !haveORT {
			return "", fmt.Errorf("backend ort: %w: this binary is built without ONNX Runtime (the nlpswarm-ort image has it)", ErrBackendUnavailable)
		}
		return BackendORT, nil
	}
	return "", fmt.Errorf("unknown backend %q (want auto, ort or go)", want)
}

func backendByName(name string) Backend {
	if name == BackendORT {
		return ortBackend
	}
	return goBackend{}
}

// pipelineModel is hugot's model behind m's pipeline.
func (m *Model) pipelineModel() *backends.Model {
	switch {
	case m.tc != nil:
		return m.tc.GetModel()
	case m.nc != nil:
		return m.nc.GetModel()
	case m.fe != nil:
		return m.fe.GetModel()
	}
	return nil
}
