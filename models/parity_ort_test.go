//go:build ORT

package models

import (
	"os"
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
func TestParityORT(t *testing.T) {
	testParity(t, requireORT(t))
}
