package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlpswarm/nlpswarm/internal/pg/pgtest"
)

// fakeNVML is a fake GPU source fed from what NVML reported on a real H100.
type fakeNVML struct{ inv Inventory }

func (f *fakeNVML) Read() (Inventory, error) { return f.inv, nil }

func h100(t *testing.T) Inventory {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "fixtures", "nvml-h100.json"))
	if err != nil {
		t.Skipf("nvml fixture absent: %v", err)
	}
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestReportInventory(t *testing.T) {
	db := pgtest.New(t, true)
	ctx := context.Background()
	src := &fakeNVML{inv: h100(t)}
	reg := prometheus.NewRegistry()
	r := &Reporter{DB: db.Pool, NodeID: "node-gpu-1", Source: src, Log: slog.New(slog.DiscardHandler), Metrics: NewMetrics(reg)}
	if _, err := r.Report(ctx); err != nil {
		t.Fatal(err)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "nlpswarm_agent_gpu_memory_free_bytes" && mf.GetMetric()[0].GetGauge().GetValue() == 85017493504 {
			found = true
		}
	}
	if !found {
		t.Fatal("no free GPU memory gauge for the H100")
	}
	var uuid, name string
	var total, free int64
	if err := db.Pool.QueryRow(ctx, `SELECT uuid, name, memory_total, memory_free FROM gpus WHERE node_id = 'node-gpu-1'`).Scan(&uuid, &name, &total, &free); err != nil {
		t.Fatal(err)
	}
	if uuid != "GPU-6dbd0f63-4ff1-3c08-35c4-b39b76c99a0c" || name != "NVIDIA H100 80GB HBM3" || total != 85520809984 || free != 85017493504 {
		t.Fatalf("stored %s %s %d %d", uuid, name, total, free)
	}
	// a GPU that vanishes is removed
	src.inv.GPUs = nil
	if _, err := r.Report(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM gpus`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d GPUs left", n)
	}
}

// On this machine (no driver) the real NVML source says "no NVML", which the
// reporter turns into zero GPUs, not an error. With cgo this exercises the
// real library loading; without it, the static fallback.
func TestNoNVMLMeansZeroGPUs(t *testing.T) {
	inv, err := (&NVML{}).Read()
	if err == nil && len(inv.GPUs) > 0 {
		t.Skipf("this machine has %d GPU(s)", len(inv.GPUs))
	}
	if !errors.Is(err, ErrNoNVML) {
		t.Fatalf("want ErrNoNVML, got %v", err)
	}
	db := pgtest.New(t, true)
	r := &Reporter{DB: db.Pool, NodeID: "cpu-node", Source: &NVML{}, Log: slog.New(slog.DiscardHandler)}
	got, err := r.Report(context.Background())
	if err != nil || len(got.GPUs) != 0 {
		t.Fatalf("report: %+v %v", got, err)
	}
	var reason string
	if err := db.Pool.QueryRow(context.Background(), `SELECT gpu_reason FROM nodes WHERE id = 'cpu-node'`).Scan(&reason); err != nil || !strings.HasPrefix(reason, "NVML not available: ") {
		t.Fatalf("stored reason %q (%v)", reason, err)
	}
	t.Logf("reason on this machine: %s", reason)
}

// readSource is a Source that answers what it is given.
type readSource struct {
	inv Inventory
	err error
}

func (s readSource) Read() (Inventory, error) { return s.inv, s.err }

// TestRead: a node without GPUs always says why, a reading with GPUs never
// carries a reason, and only a failed read is an error.
func TestRead(t *testing.T) {
	fixture := h100(t)
	boom := errors.New("nvml device 0: ERROR_GPU_IS_LOST")
	for _, tc := range []struct {
		name       string
		src        readSource
		wantGPUs   int
		wantReason string
		wantErr    error
	}{
		{"the H100 of the fixture", readSource{inv: fixture}, 1, "", nil},
		{"a stale reason is dropped when GPUs show", readSource{inv: Inventory{GPUs: fixture.GPUs, Reason: "old"}}, 1, "", nil},
		{"no NVML: zero GPUs and why", readSource{err: fmt.Errorf("%w: %s", ErrNoNVML, noLibraryText)}, 0, "NVML not available: " + noLibraryText, nil},
		{"NVML found none", readSource{inv: Inventory{Driver: "580.159.04"}}, 0, `NVML found no GPU (driver "580.159.04")`, nil},
		{"a source's own reason is kept", readSource{inv: Inventory{Reason: "fake: none"}}, 0, "fake: none", nil},
		{"a failed read is an error", readSource{err: boom}, 0, "", boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := Read(tc.src)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(inv.GPUs) != tc.wantGPUs || inv.GPUs == nil || inv.Reason != tc.wantReason {
				t.Fatalf("got %d GPUs (nil %v), reason %q; want %d, %q", len(inv.GPUs), inv.GPUs == nil, inv.Reason, tc.wantGPUs, tc.wantReason)
			}
		})
	}
}

// noLibraryText stands for whatever the NVML source says after "NVML not available: ".
const noLibraryText = "libnvidia-ml.so.1 not found"
