package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFakeGPUsFile: the file's inventory where it exists, the fallback
// (NVML: none here) where it does not, an error for a malformed file.
func TestFakeGPUsFile(t *testing.T) {
	dir := t.TempDir()
	fixture, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "fixtures", "nvml-h100.json"))
	if err != nil {
		t.Skipf("nvml fixture absent: %v", err)
	}
	path := filepath.Join(dir, "gpu-node.json")
	if err := os.WriteFile(path, fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := (&FakeGPUsFile{Path: path, Fallback: &NVML{}}).Read()
	if err != nil || len(inv.GPUs) != 1 || inv.GPUs[0].Name != "NVIDIA H100 80GB HBM3" {
		t.Fatalf("fake file: %+v %v", inv, err)
	}
	if _, err := (&FakeGPUsFile{Path: filepath.Join(dir, "other-node.json"), Fallback: &NVML{}}).Read(); !errors.Is(err, ErrNoNVML) {
		t.Fatalf("absent file: want the fallback's ErrNoNVML, got %v", err)
	}
	os.WriteFile(path, []byte("{not json"), 0o644)
	if _, err := (&FakeGPUsFile{Path: path}).Read(); err == nil || errors.Is(err, ErrNoNVML) {
		t.Fatalf("malformed file: want an error, got %v", err)
	}
}
