package models

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestBuckets(t *testing.T) {
	for _, c := range []struct {
		maxBatch int
		want     []int
	}{{1, []int{1}}, {2, []int{1, 2}}, {32, []int{1, 2, 4, 8, 16, 32}}, {33, []int{1, 2, 4, 8, 16, 32, 64}}} {
		if got := batchBuckets(c.maxBatch); !reflect.DeepEqual(got, c.want) {
			t.Errorf("batchBuckets(%d) = %v, want %v", c.maxBatch, got, c.want)
		}
	}
	for _, c := range []struct {
		maxPos int
		want   []int
	}{{8, []int{8}}, {16, []int{16}}, {64, []int{16, 32, 64}}, {128, []int{16, 32, 64, 128}}, {514, []int{16, 32, 64, 128, 256, 512, 514}}} {
		if got := sequenceBuckets(c.maxPos); !reflect.DeepEqual(got, c.want) {
			t.Errorf("sequenceBuckets(%d) = %v, want %v", c.maxPos, got, c.want)
		}
	}
	for _, c := range []struct {
		n, size int
		want    [][2]int
	}{{0, 32, nil}, {5, 32, [][2]int{{0, 5}}}, {64, 32, [][2]int{{0, 32}, {32, 64}}}, {70, 32, [][2]int{{0, 32}, {32, 64}, {64, 70}}}} {
		if got := chunks(c.n, c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("chunks(%d, %d) = %v, want %v", c.n, c.size, got, c.want)
		}
	}
}

func TestWarmShapes(t *testing.T) {
	got := warmShapes([]int{1, 2, 4}, []int{16, 32})
	want := [][2]int{{1, 16}, {1, 32}, {2, 16}, {2, 32}, {4, 16}, {4, 32}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warmShapes = %v, want %v", got, want)
	}
}

// Warm runs every bucket of the sentiment fixture when given the time, and
// stops at once when ctx has ended.
func TestWarm(t *testing.T) {
	m := sentiment(t)
	n, err := m.Warm(context.Background())
	if err != nil || n != len(batchBuckets(maxBatchDefault))*len(sequenceBuckets(m.pipelineModel().MaxPositionEmbeddings)) {
		t.Fatalf("warmed %d shapes: %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := m.Warm(ctx); n != 0 || err != nil {
		t.Errorf("canceled warm ran %d shapes: %v", n, err)
	}
}

func TestMaxPositions(t *testing.T) {
	for _, c := range []struct {
		config string
		want   int
		bad    bool
	}{{`{"max_position_embeddings": 128}`, 128, false}, {`{}`, 512, false}, {`{"max_position_embeddings": -1}`, 0, true}, {`{"max_position_embeddings": 1e9}`, 0, true}, {`[`, 0, true}} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(c.config), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := maxPositions(dir)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("%s: %d, %v", c.config, got, err)
		}
	}
}

func TestChooseBackend(t *testing.T) {
	for _, c := range []struct {
		want    string
		haveORT bool
		got     string
		bad     bool
	}{
		{"", false, BackendGo, false}, {"auto", false, BackendGo, false}, {"auto", true, BackendORT, false},
		{"go", true, BackendGo, false}, {"ort", true, BackendORT, false}, {"ort", false, "", true}, {"tpu", true, "", true},
	} {
		got, err := chooseBackend(c.want, c.haveORT)
		if got != c.got || (err != nil) != c.bad {
			t.Errorf("chooseBackend(%q, %v) = %q, %v", c.want, c.haveORT, got, err)
		}
	}
}
