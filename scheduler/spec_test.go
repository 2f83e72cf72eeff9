package scheduler

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/nlpswarm/nlpswarm/internal/deployment"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestBuildSpecGolden(t *testing.T) {
	cfg := SpecConfig{Image: "sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd", Network: "nlpswarm",
		ArtifactBaseURL: "http://apiserver:8081/", TokenSecretID: "sec123", TokenSecretName: "nlpswarm_internal_token",
		PlacementConstraint: "node.labels.type==machine-learning"}
	tests := []struct {
		name string
		d    Desired
	}{
		{"cpu", Desired{Desired: deployment.Desired{Model: "sentiment", Task: "text-classification", Version: 3, Digest: "sha256:feed", Replicas: 2,
			Resources: deployment.Resources{CPUs: 1, MemoryReservation: 300 << 20, Labels: map[string]string{"zone": "eu", "disk": "ssd"}}}}},
		{"gpu", Desired{Desired: deployment.Desired{Model: "big", Task: "feature-extraction", Version: 1, Digest: "sha256:beef", Replicas: 1,
			Resources: deployment.Resources{MemoryBytes: 8 << 30, MemoryReservation: 4 << 30, GPUs: 1, GPUMemory: 16 << 30}}, Pin: &Pin{NodeID: "node-7", GPUUUIDs: []string{"GPU-6dbd0f63-4ff1-3c08-35c4-b39b76c99a0c"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := BuildSpec(tt.d, cfg)
			got, _ := json.MarshalIndent(spec, "", "  ")
			path := filepath.Join("testdata", "spec_"+tt.name+".golden.json")
			if *update {
				os.WriteFile(path, append(got, '\n'), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./scheduler -run Golden -update)", err)
			}
			if string(want) != string(got)+"\n" {
				t.Fatalf("spec differs from %s:\n%s", path, got)
			}
			if _, ok := spec.Labels["com.docker.stack.namespace"]; ok {
				t.Fatal("model services must not carry the stack namespace")
			}
			// scaling alone keeps the hash: a scale is not a rolling update
			d2 := tt.d
			d2.Replicas++
			if SpecHash(BuildSpec(d2, cfg)) != spec.Labels[LabelSpecHash] {
				t.Fatal("replica count changed the spec hash")
			}
			d2.Version++
			if BuildSpec(d2, cfg).Labels[LabelSpecHash] == spec.Labels[LabelSpecHash] {
				t.Fatal("a new version kept the spec hash")
			}
		})
	}
}
