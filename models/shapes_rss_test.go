package models

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// rssMiB reads this process's resident set from /proc/self/statm after a GC.
func rssMiB(t *testing.T) float64 {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm: %v", err)
	}
	pages, err := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return float64(pages*int64(os.Getpagesize())) / (1 << 20)
}

// Distinct input shapes no longer grow the Go backend's compiled graphs:
// after every bucket is warmed and 250 distinct (batch, length) shapes have
// run, 250 more shapes, none of them seen before, leave RSS within 10 %.
// (The first pass absorbs what the process grows by once whatever it runs:
// measured from the warm buckets alone, RSS grew 12-21 % on the first run
// in a process and not at all on the next, enough to fail a fresh-clone CI
// run. A cache per shape would still grow on the second pass, whose
// shapes are new.)
func TestShapeCacheBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("500 inferences")
	}
	m, err := LoadWith(fixture(t, "sentiment"), "sentiment", TextClassification, EngineConfig{Backend: BackendGo})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	var p Params
	_ = p.Check(TextClassification)
	texts := func(batch, words int) []string {
		out := make([]string, batch)
		for i := range out {
			out[i] = strings.TrimSpace(strings.Repeat("a ", words))
		}
		return out
	}
	// warm every bucket: largest batch of each bucket at each length bucket
	for _, b := range batchBuckets(maxBatchDefault) {
		for _, s := range sequenceBuckets(m.pipelineModel().MaxPositionEmbeddings) {
			if _, err := m.Predict(ctx, texts(b, s-2), p); err != nil {
				t.Fatal(err)
			}
		}
	}
	// pass runs up to 250 distinct shapes: for each batch size, texts of
	// first, first+4, ... words (plus batch%4); passes with first 1 and 3
	// share no shape
	pass := func(first int) int {
		n := 0
		for batch := 1; batch <= maxBatchDefault && n < 250; batch++ {
			for words := first; words <= 62 && n < 250; words += 4 {
				if _, err := m.Predict(ctx, texts(batch, words+batch%4), p); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		return n
	}
	pass(1)
	before := rssMiB(t)
	n := pass(3)
	after := rssMiB(t)
	t.Logf("%d new shapes: RSS %.1f → %.1f MiB", n, before, after)
	if after > before*1.10 {
		t.Errorf("RSS grew %.1f → %.1f MiB (more than 10 %%) over %d new shapes", before, after, n)
	}
}
