//go:build ORT

package models

import (
	"os"
	"os/exec"
	"testing"
)

// requireORT skips when libonnxruntime is absent, unless
// NLPSWARM_ORT_REQUIRED=1 (set by `make test-ort`, which provides it).
func requireORT(t testing.TB) EngineConfig {
	t.Helper()
	eng := EngineConfig{Backend: BackendORT}
	if ORTLibraryDir(eng) == "" {
		if os.Getenv("NLPSWARM_ORT_REQUIRED") == "1" {
			t.Fatal("NLPSWARM_ORT_REQUIRED=1 but no libonnxruntime.so found (NLPSWARM_ORT_DIR)")
		}
		t.Skip("libonnxruntime not found: set NLPSWARM_ORT_DIR, or run make test-ort")
	}
	return eng
}

// TestParityORT: the ORT backend matches transformers as the Go one does.
// It runs in a child process of its own: ORT allows one session per
// process, and other tests of this binary may hold it.
func TestParityORT(t *testing.T) {
	eng := requireORT(t)
	if os.Getenv("NLPSWARM_PARITY_CHILD") == "1" {
		testParity(t, eng)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestParityORT$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NLPSWARM_PARITY_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", filterSchemaErrors(out))
	if err != nil {
		t.Fatalf("ORT parity in a child process: %v", err)
	}
}

// The ORT engine loads and answers inside the validation child's sandbox:
// EngineFiles covers its library and what it links.
func TestEngineLoadsInSandboxORT(t *testing.T) {
	engineInSandbox(t, "TestEngineLoadsInSandboxORT", requireORT(t))
}
