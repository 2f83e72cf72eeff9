package models

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The Go backend compiles one graph per input shape (batch, sequence) and
// keeps it: left alone, every distinct shape costs a compile (70 ms–1 s)
// and memory for good. Shapes are padded up to buckets instead (powers of
// two), so a replica holds at most len(batch)×len(sequence) graphs.

// maxBatchDefault is the largest batch one engine call runs; Predict splits
// larger inputs (the batcher's default MaxSize).
const maxBatchDefault = 32

// batchBuckets are the powers of two from 1 up to the first ≥ maxBatch.
func batchBuckets(maxBatch int) []int {
	out := []int{1}
	for out[len(out)-1] < maxBatch {
		out = append(out, out[len(out)-1]*2)
	}
	return out
}

// sequenceBuckets are the powers of two from 16 below maxPositions, then
// maxPositions itself: hugot truncates to it, and padding past it would
// index beyond the position embeddings.
func sequenceBuckets(maxPositions int) []int {
	var out []int
	for s := 16; s < maxPositions; s *= 2 {
		out = append(out, s)
	}
	return append(out, maxPositions)
}

// maxPositions reads max_position_embeddings from dir/config.json (512 when
// the config has none, BERT's).
func maxPositions(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return 0, err
	}
	var cfg struct {
		MaxPositions *int `json:"max_position_embeddings"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, fmt.Errorf("config.json: %w", err)
	}
	switch {
	case cfg.MaxPositions == nil:
		return 512, nil
	case *cfg.MaxPositions < 1 || *cfg.MaxPositions > 1<<16:
		return 0, fmt.Errorf("config.json: max_position_embeddings %d out of range", *cfg.MaxPositions)
	}
	return *cfg.MaxPositions, nil
}

// chunks splits n items into runs of at most size: [start, end) pairs.
func chunks(n, size int) [][2]int {
	var out [][2]int
	for s := 0; s < n; s += size {
		out = append(out, [2]int{s, min(n, s+size)})
	}
	return out
}

// Predict runs the pipeline on texts (already cleaned) with params (already
// checked); it returns one output per text. Inputs larger than the largest
// batch bucket run as several calls, and a canceled ctx stops between them;
// texts are cut by characters first (truncate.go).
func (m *Model) Predict(ctx context.Context, texts []string, p Params) ([]any, error) {
	out := make([]any, 0, len(texts))
	if pm := m.pipelineModel(); pm != nil {
		texts = truncateTexts(texts, pm.MaxPositionEmbeddings)
	}
	for _, c := range chunks(len(texts), maxBatchDefault) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o, err := m.predictBatch(texts[c[0]:c[1]], p)
		if err != nil {
			return nil, err
		}
		out = append(out, o...)
	}
	return out, nil
}

// warmShapes lists every (batch, sequence) bucket pair, cheapest first, so
// a time-bounded warm-up compiles the shapes most requests use.
func warmShapes(batches, sequences []int) [][2]int {
	var out [][2]int
	for _, b := range batches {
		for _, s := range sequences {
			out = append(out, [2]int{b, s})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i][0]*out[i][1] < out[j][0]*out[j][1] })
	return out
}

// Warm compiles the Go backend's bucket shapes before the runtime says it
// is ready, cheapest first, until ctx ends (the caller bounds it: a large
// model's biggest shapes take minutes on this backend); it returns how
// many shapes it ran. ORT compiles nothing per shape: it runs one.
func (m *Model) Warm(ctx context.Context) (int, error) {
	pm := m.pipelineModel()
	if pm == nil {
		return 0, nil
	}
	shapes := warmShapes(batchBuckets(maxBatchDefault), sequenceBuckets(pm.MaxPositionEmbeddings))
	if m.Backend != BackendGo {
		shapes = shapes[:1]
	}
	var p Params
	if err := p.Check(m.Task); err != nil {
		return 0, err
	}
	for i, sh := range shapes {
		if ctx.Err() != nil {
			return i, nil
		}
		// a word per position, less [CLS] and [SEP]
		text := strings.TrimSpace(strings.Repeat("a ", max(1, sh[1]-2)))
		texts := make([]string, sh[0])
		for k := range texts {
			texts[k] = text
		}
		if _, err := m.predictBatch(texts, p); err != nil {
			return i, fmt.Errorf("warm %d×%d: %w", sh[0], sh[1], err)
		}
	}
	return len(shapes), nil
}
