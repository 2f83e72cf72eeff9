package modelmgr

import "testing"

// The default reservation covers what the engines were measured to use
// (models/BENCHMARKS.md, "Memory per engine"): the MiniLM-sized encoder's
// peak on ONNX Runtime, and the floor for the small fixtures.
func TestDefaultMemoryCoversMeasuredPeaks(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name       string
		onnx, peak int64
	}{
		{"MiniLM-sized (85.6 MiB), ort", 89758106, 436 * mib},
		{"MiniLM-sized (85.6 MiB), go", 89758106, 386 * mib},
		{"sentiment fixture, ort", 431 << 10, 50 * mib},
	} {
		if got := DefaultMemory(c.onnx); got < c.peak {
			t.Errorf("%s: default reservation %d MiB under the measured peak %d MiB", c.name, got/mib, c.peak/mib)
		}
	}
	if DefaultMemory(1) != MinMemory {
		t.Errorf("a tiny model reserves %d, want the floor %d", DefaultMemory(1), MinMemory)
	}
}
