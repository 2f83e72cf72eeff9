//go:build ORT

package models

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/knights-analytics/hugot"
	"github.com/knights-analytics/hugot/backends"
	"github.com/knights-analytics/hugot/options"
	"github.com/sugarme/tokenizer/pretrained"

	"github.com/nlpswarm/nlpswarm/internal/sandbox"
)

// HaveORT tells whether this binary was built with ONNX Runtime (tag ORT).
const HaveORT = true

func init() { ortBackend = ortEngine{} }

// ORTLibraryDir is the folder whose libonnxruntime.so the ORT backend loads
// for cfg (hugot wants that file name in a folder), or "" if none has it.
// EngineConfig.LibraryDir, then NLPSWARM_ORT_DIR, then /usr/lib, where the
// nlpswarm-ort image links Debian's libonnxruntime.so.1.23.
func ORTLibraryDir(cfg EngineConfig) string {
	for _, d := range []string{cfg.LibraryDir, os.Getenv("NLPSWARM_ORT_DIR"), "/usr/lib"} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "libonnxruntime.so")); err == nil {
			return d
		}
	}
	return ""
}

// EngineFiles is what the engines of this binary read to load a model,
// beyond the model's own folder: ONNX Runtime's library and the libraries
// it links (the dynamic loader finds them through ld.so.cache or the
// standard folders), and the CPU description its cpuinfo reads to pick its
// kernels. The validation child's sandbox allows it
// (modelmgr.Validator.Engine).
func EngineFiles() sandbox.Policy {
	dirs := []string{"/usr/lib", "/lib", "/usr/lib64", "/lib64", "/sys/devices/system/cpu"}
	if d := ORTLibraryDir(DefaultEngineConfig()); d != "" {
		dirs = append(dirs, d)
	}
	return sandbox.Policy{ReadDirs: dirs, ReadFiles: []string{"/etc/ld.so.cache", "/proc/cpuinfo"}}
}

type ortEngine struct{}

func (ortEngine) Name() string { return BackendORT }

// newSession: one intra-op thread per CPU the deployment gives us (ORT's
// default oversubscribes a small container: one thread beat it 2× on two
// cores), one inter-op thread (the batcher already serialises calls), no
// spinning (idle replicas must not burn their CPU share).
func (ortEngine) newSession(cfg EngineConfig, _ string) (*hugot.Session, error) {
	lib := ORTLibraryDir(cfg)
	if lib == "" {
		return nil, fmt.Errorf("backend ort: %w: no libonnxruntime.so in /usr/lib (set NLPSWARM_ORT_DIR)", ErrBackendUnavailable)
	}
	s, err := hugot.NewORTSession(
		options.WithOnnxLibraryPath(lib),
		options.WithIntraOpNumThreads(cfg.threads()),
		options.WithInterOpNumThreads(1),
		options.WithIntraOpSpinning(false),
		options.WithInterOpSpinning(false),
	)
	if err != nil {
		return nil, fmt.Errorf("backend ort (%s): %w: %w", lib, ErrBackendUnavailable, err)
	}
	return s, nil
}

// prepare swaps hugot's pure-Go tokenizer in for the Rust one hugot's ORT
// backend expects (not linked here: see models/ort/notokenizers), before any
// text is encoded. Timings, limits and Destroy of hugot's tokenizer stay.
func (ortEngine) prepare(m *backends.Model, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	tk, err := pretrained.FromReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("tokenizer.json: %w", err)
	}
	if m.Tokenizer == nil {
		return fmt.Errorf("tokenizer: hugot loaded none")
	}
	m.Tokenizer.Runtime = "GO"
	m.Tokenizer.GoTokenizer = &backends.GoTokenizer{Tokenizer: tk}
	m.Tokenizer.RustTokenizer = nil
	return nil
}

// threads is the intra-op thread count: cfg.Threads, or the CPUs this
// process may use (GOMAXPROCS follows the container's CPU limit).
func (cfg EngineConfig) threads() int {
	if cfg.Threads > 0 {
		return cfg.Threads
	}
	return max(1, runtime.GOMAXPROCS(0))
}
